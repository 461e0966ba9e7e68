#!/usr/bin/env python3
"""What the kernel charges for writing 1 GiB into a new file in different write patterns:
the node's old one (a pwrite per 7984-byte put fragment, at unaligned offsets) against
aligned writes and pwritev of contiguous fragments. Prints CPU and wall seconds per GiB.

    python3 ci/bench-kernel-writes.py [DIR]      # DIR defaults to /var/tmp (the bench's)

See docs/benchmarks.md, "Put fragments written together".
"""
import os
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp"
TOTAL = 1 << 30
DATA = os.urandom(8192)


def measure(write, step, base):
    path = os.path.join(DIR, f"bench-kernel-writes.{os.getpid()}")
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        cpu, wall = time.process_time(), time.time()
        offset = 0
        while offset < TOTAL:
            write(fd, base + offset)
            offset += step
        return time.process_time() - cpu, time.time() - wall
    finally:
        os.close(fd)
        os.unlink(path)


def single(size):
    view = memoryview(DATA)[:size]
    return lambda fd, at: os.pwrite(fd, view, at)


def vectored(size, count):
    views = [memoryview(DATA)[:size]] * count
    return lambda fd, at: os.pwritev(fd, views, at)


CASES = [
    ("pwrite 7984 bytes at 64 + k*7984 (the node's old pattern)", single(7984), 7984, 64),
    ("pwrite 8192 bytes, page-aligned", single(8192), 8192, 0),
    ("pwritev 4 x 7984 contiguous", vectored(7984, 4), 4 * 7984, 64),
    ("pwritev 8 x 7984", vectored(7984, 8), 8 * 7984, 64),
    ("pwritev 16 x 7984", vectored(7984, 16), 16 * 7984, 64),
    ("pwritev 32 x 7984", vectored(7984, 32), 32 * 7984, 64),
]

for name, write, step, base in CASES:
    cpu, wall = measure(write, step, base)
    print(f"{name}: {cpu:.2f} CPU s, {wall:.2f} wall s per GiB")
