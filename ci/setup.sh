#!/usr/bin/env bash
# Installs what building and testing Beeline needs on Debian 12, as root. Idempotent:
# packages already present are not touched, and apt runs only when something is missing.
set -euo pipefail

packages=(build-essential pkg-config util-linux iproute2 procps curl redis-server prometheus)
# `beeline mount` (fusermount3) and its tests (getfattr/setfattr).
packages+=(fuse3 attr)
# The XDP classifier (ebpf/) is built with clang against the kernel's UAPI headers; the
# AF_XDP tests use ethtool, ping and tc (iproute2) inside network namespaces.
packages+=(clang llvm linux-libc-dev ethtool iputils-ping)
# ci/vagrant-validate.sh: `vagrant validate` for the libvirt (plugin, no daemon needed) and
# VirtualBox providers, and shellcheck for the provisioning scripts.
packages+=(vagrant vagrant-libvirt shellcheck)
# `beeline web`'s browser test (controlplane/tests/web.rs) drives headless Chromium over
# the DevTools protocol.
packages+=(chromium)
# The DPDK backend (feature `dpdk`): DPDK 22.11 with its PMDs, libclang for bindgen, and
# dpdk-devbind.py for binding NICs.
packages+=(dpdk dpdk-dev libdpdk-dev libclang-dev)
# The content extractors (controlplane/src/tagger/extract): poppler-utils (pdfinfo,
# pdftotext) for PDF, ffmpeg (ffprobe) for video and to convert audio for speech-to-text,
# pocketsphinx and its US English model for speech; the tests speak with espeak-ng.
packages+=(poppler-utils ffmpeg pocketsphinx pocketsphinx-en-us espeak-ng)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "ci/setup.sh: missing Debian packages ${missing[*]}: run as root (or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "ci/setup.sh: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Rust toolchain comes from rustup (Debian 12's cargo is too old for edition 2024).
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "ci/setup.sh: no cargo found: install Rust >= 1.87 with rustup (https://rustup.rs) and re-run" >&2
    exit 1
fi
