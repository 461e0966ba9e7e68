//! `beeline mount` driven by real tools (cp, cat, ls, mv, rm, truncate, sha256sum,
//! getfattr/setfattr, find) through the kernel's FUSE, on a single node and on a
//! three-node cluster with a real redis-server, including a node killed while files are
//! read through the mount. Every mount is unmounted by a guard, whatever the outcome.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::loopback::{Loopback, skip_without_redis};
use common::node::{BIN, TestNode, free_tcp_address, metric, ok};
use common::{Process, have, pattern};

const MIB: usize = 1 << 20;
/// The chunk size the mount stores files with (the client's default).
const CHUNK: usize = 4 * MIB;

fn skip_without_fuse(test: &str) -> bool {
    let reason = if !Path::new("/dev/fuse").exists() {
        "/dev/fuse is missing (load the fuse kernel module)"
    } else if !have("fusermount3") {
        "fusermount3 is not installed (ci/setup.sh installs Debian's fuse3)"
    } else if !have("getfattr") || !have("setfattr") {
        "getfattr/setfattr are not installed (ci/setup.sh installs Debian's attr)"
    } else {
        return false;
    };
    beeline_dataplane::testkit::skip(test, reason);
    true
}

/// The tests of this file run one at a time. A process this test binary starts (a
/// shell, `cp`, a node) inherits every descriptor the binary has open at that moment, and
/// closes them at `exec`; each such close is a FUSE flush, which stores the file. Tests
/// that keep a file open across a step (write-behind, a `dup`, a node restart) would
/// otherwise see their files stored midway by another test's `cp`.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    mounts.lines().any(|line| line.split(' ').nth(4) == Some(dir.as_str()))
}

/// A running `beeline mount`; unmounted (lazily, so a stuck reader cannot block it) and
/// killed on drop.
struct Mount {
    process: Option<Process>,
    dir: PathBuf,
}

impl Mount {
    fn start(dir: &Path, spool: &Path, target_args: &[String]) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let mut command = Command::new(BIN);
        command.arg("mount").arg(dir).arg("--spool-dir").arg(spool).args(target_args);
        let mut mount = Mount { process: Some(Process::spawn(command)), dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(dir) {
            let process = mount.process.as_mut().unwrap();
            if let Some(status) = process.exited() {
                panic!("beeline mount exited with {status}:\n{}", process.log());
            }
            assert!(Instant::now() < deadline, "not mounted within 30 s:\n{}", process.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log(&self) -> String {
        self.process.as_ref().map(Process::log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.dir).status();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        drop(self.process.take());
    }
}

fn sh(script: &str) -> Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = sh_ok(&format!("sha256sum '{}'", path.display()));
    out.split_whitespace().next().unwrap().to_owned()
}

fn size_in_ls(listing: &str, name: &str) -> u64 {
    let line = listing.lines().find(|line| line.ends_with(&format!(" {name}"))).unwrap_or_else(|| panic!("{listing}"));
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// Everything a user does through the mount; `cli` runs `beeline` against the same store.
fn exercise(mount: &Mount, work: &Path, cli: &dyn Fn(&[&str]) -> Output) {
    let m = |name: &str| mount.path(name).display().to_string();
    // Edge sizes round trip: in with cp, checked with sha256sum, out with cp.
    std::fs::create_dir_all(mount.path("sizes")).unwrap();
    let sizes = [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK / 2 + 7];
    for (index, size) in sizes.iter().enumerate() {
        let local = work.join(format!("in-{index}"));
        std::fs::write(&local, pattern(*size, index as u64 + 1)).unwrap();
        sh_ok(&format!("cp '{}' '{}'", local.display(), m(&format!("sizes/f{index}"))));
        assert_eq!(sha256(&mount.path(&format!("sizes/f{index}"))), sha256(&local), "size {size}");
        let out = work.join(format!("out-{index}"));
        sh_ok(&format!("cp '{}' '{}'", m(&format!("sizes/f{index}")), out.display()));
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&local).unwrap(), "size {size} copied out");
    }
    let listing = sh_ok(&format!("ls -l '{}'", m("sizes")));
    for (index, size) in sizes.iter().enumerate() {
        assert_eq!(size_in_ls(&listing, &format!("f{index}")), *size as u64, "{listing}");
    }
    // What went in through the mount is a stored file like any other.
    let got = work.join("got");
    ok(&cli(&["get", "sizes/f3", "-o", got.to_str().unwrap()]));
    assert_eq!(std::fs::read(&got).unwrap(), pattern(CHUNK + 1, 4));
    // And what the CLI stores shows in the mount.
    let small = work.join("small.txt");
    std::fs::write(&small, b"hello through the mount\n").unwrap();
    ok(&cli(&["put", small.to_str().unwrap(), "--as", "docs/small.txt"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mount.path("docs/small.txt").exists() {
        assert!(Instant::now() < deadline, "a file put by the CLI never showed in the mount");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sh_ok(&format!("cat '{}'", m("docs/small.txt"))), "hello through the mount\n");

    // A reader opened while a writer had the file open reads what the writer stored on
    // close.
    let handoff = m("docs/handoff");
    let read = sh_ok(&format!("exec 3>'{handoff}'; printf abc >&3; exec 4<'{handoff}'; exec 3>&-; cat <&4"));
    assert_eq!(read, "abc");
    assert_eq!(ok(&cli(&["get", "docs/handoff", "-o", "-"])), "abc");

    // Write-only handles (direct I/O where the kernel allows it): appends, and a write
    // into the middle of a stored file without truncating it.
    let appended = m("docs/appended");
    sh_ok(&format!("printf one > '{appended}' && printf two >> '{appended}'"));
    sh_ok(&format!("printf XY | dd of='{appended}' bs=1 seek=1 conv=notrunc status=none"));
    assert_eq!(sh_ok(&format!("cat '{appended}'")), "oXYtwo");
    assert_eq!(ok(&cli(&["get", "docs/appended", "-o", "-"])), "oXYtwo");
    // A reader holding the file open (its pages cached) sees what a write-only handle
    // wrote past the cache, before and after that handle's close.
    let seen = sh_ok(&format!(
        "python3 -c 'import os,sys; r=os.open(sys.argv[1],os.O_RDONLY); os.pread(r,6,0); w=os.open(sys.argv[1],os.O_WRONLY); os.pwrite(w,b\"NE\",1); a=os.pread(r,6,0); os.close(w); sys.stdout.write((a+os.pread(r,6,0)).decode())' '{appended}'"
    ));
    assert_eq!(seen, "oNEtwooNEtwo", "a reader's cached pages went stale under a direct write");
    assert_eq!(ok(&cli(&["get", "docs/appended", "-o", "-"])), "oNEtwo");
    // A stored file maps (a program run from the mount, a database reading its pages).
    let mapped = sh_ok(&format!(
        "python3 -c 'import mmap,sys; f=open(sys.argv[1],\"rb\"); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); sys.stdout.write(str(m[:]==open(sys.argv[2],\"rb\").read()))' '{}' '{}'",
        m("sizes/f3"),
        work.join("in-3").display()
    ));
    assert_eq!(mapped, "True", "a file read through a mapping differs");

    // mkdir / rmdir, and a directory with a file in it is not empty.
    sh_ok(&format!("mkdir '{}'", m("empty")));
    assert!(mount.path("empty").is_dir());
    sh_ok(&format!("rmdir '{}'", m("empty")));
    assert!(!mount.path("empty").exists());
    let refused = sh(&format!("rmdir '{}'", m("docs")));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"), "{refused:?}");
    let refused = sh(&format!("mkdir '{}'", m("docs")));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("File exists"), "{refused:?}");

    // mv (into a directory made in this session), rm.
    sh_ok(&format!("mkdir '{}' && mv '{}' '{}'", m("moved"), m("sizes/f4"), m("moved/f4")));
    assert!(!mount.path("sizes/f4").exists());
    assert_eq!(sha256(&mount.path("moved/f4")), sha256(&work.join("in-4")));
    assert!(ok(&cli(&["ls"])).contains("moved/f4"));
    sh_ok(&format!("rm '{}'", m("moved/f4")));
    assert!(!mount.path("moved/f4").exists());
    assert!(!ok(&cli(&["ls"])).contains("moved/f4"));
    let missing = sh(&format!("cat '{}'", m("moved/f4")));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such file"), "{missing:?}");

    // truncate shrinks, extends with zeros, empties.
    sh_ok(&format!("truncate -s 1000 '{}'", m("sizes/f2")));
    let mut expected = pattern(CHUNK, 3);
    expected.truncate(1000);
    assert_eq!(std::fs::read(mount.path("sizes/f2")).unwrap(), expected);
    sh_ok(&format!("truncate -s 1500 '{}'", m("sizes/f2")));
    expected.resize(1500, 0);
    assert_eq!(std::fs::read(mount.path("sizes/f2")).unwrap(), expected);
    sh_ok(&format!("truncate -s 0 '{}'", m("sizes/f2")));
    assert_eq!(std::fs::metadata(mount.path("sizes/f2")).unwrap().len(), 0);

    // Names longer than the CLI allows.
    let long = "x".repeat(300);
    let refused = sh(&format!("touch '{}'", m(&long)));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("File name too long"), "{refused:?}");

    // Tags: the extended attribute, and .tags/ as directories.
    let f1 = m("sizes/f1");
    sh_ok(&format!("setfattr -n user.disgrafs.tags -v 'alpha,beta' '{f1}'"));
    sh_ok(&format!("setfattr -n user.disgrafs.tags -v 'alpha' '{}'", m("docs/small.txt")));
    // The node's own tagger may add automatic tags, shown as `tag(extractor)`.
    let user_tags = |path: &str| -> String {
        let value = sh_ok(&format!("getfattr --only-values -n user.disgrafs.tags '{path}'"));
        assert!(value.split(',').filter(|t| t.contains('(')).all(|t| t.ends_with(')')), "{value}");
        value.split(',').filter(|t| !t.is_empty() && !t.contains('(')).collect::<Vec<_>>().join(",")
    };
    assert_eq!(user_tags(&f1), "alpha,beta");
    assert!(ok(&cli(&["tags", "sizes/f1"])).contains("alpha\tuser"));
    assert!(sh_ok(&format!("getfattr -d '{f1}'")).contains("user.disgrafs.tags=\"alpha,beta"));
    let found = sh_ok(&format!("find '{}'", m(".tags")));
    let tags_dir = m(".tags");
    assert!(found.contains(&format!("{tags_dir}/alpha/sizes%2Ff1")), "{found}");
    assert!(found.contains(&format!("{tags_dir}/alpha/docs%2Fsmall.txt")), "{found}");
    assert!(found.contains(&format!("{tags_dir}/beta/sizes%2Ff1")), "{found}");
    assert!(!found.contains('+'), "combinations are never listed: {found}");
    // A looked-up combination: the files carrying both.
    let both = sh_ok(&format!("ls '{}'", m(".tags/alpha+beta")));
    assert_eq!(both.trim(), "sizes%2Ff1");
    assert_eq!(std::fs::read(mount.path(".tags/alpha+beta/sizes%2Ff1")).unwrap(), pattern(1, 2));
    let refused = sh(&format!("touch '{}'", m(".tags/alpha/new")));
    assert!(!refused.status.success());
    // Setting replaces the user tags; removing clears them.
    sh_ok(&format!("setfattr -n user.disgrafs.tags -v 'beta' '{f1}'"));
    assert_eq!(user_tags(&f1), "beta");
    sh_ok(&format!("setfattr -x user.disgrafs.tags '{f1}'"));
    assert_eq!(user_tags(&f1), "");
    assert!(sh_ok(&format!("find '{}'", m(".tags"))).contains("alpha/docs%2Fsmall.txt"));
    let bad = sh(&format!("setfattr -n user.disgrafs.tags -v 'has space' '{f1}'"));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Invalid argument"), "{bad:?}");
}

/// On Linux 6.6 and later (`FUSE_DIRECT_IO_ALLOW_MMAP`), the mount's log says `granted`;
/// older kernels keep the page cache, which the log says instead.
fn assert_direct_io_on_linux_6_6(mount: &Mount, granted: &str) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-']).map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let log = mount.log();
    assert!(
        log.contains(granted) || (major, minor) < (6, 6),
        "direct I/O not granted on Linux {major}.{minor}:\n{log}"
    );
}

/// Pages of `file` (open, `len` bytes long) the kernel holds in its page cache.
fn resident_pages(file: &std::fs::File, len: usize) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: a read-only shared mapping of an open file, never dereferenced here, unmapped
    // below.
    let address =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    assert_ne!(address, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: sysconf has no preconditions.
    let page_bytes = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
    let mut residency = vec![0u8; len.div_ceil(page_bytes)];
    // SAFETY: `address` maps `len` bytes; `residency` holds a byte for each of their pages.
    let rc = unsafe { libc::mincore(address, len, residency.as_mut_ptr()) };
    let error = std::io::Error::last_os_error();
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(address, len) };
    assert_eq!(rc, 0, "mincore: {error}");
    residency.iter().filter(|page| *page & 1 != 0).count()
}

/// A node under `tmp`, and an empty directory beside it for the test's local files.
fn node_and_work_dir(tmp: &Path) -> (TestNode, PathBuf) {
    let node = TestNode::start(tmp, &[]);
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).unwrap();
    (node, work)
}

fn node_args(node: &TestNode) -> Vec<String> {
    vec![
        "--node".into(),
        format!("127.0.0.1:{}", node.port),
        "--key-file".into(),
        node.dir.join("cluster.key").display().to_string(),
    ]
}

#[test]
fn the_mount_on_a_single_node() {
    if skip_without_fuse("the_mount_on_a_single_node") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let (node, work) = node_and_work_dir(tmp.path());
    // Only an empty directory is mounted on.
    std::fs::write(work.join("occupied"), b"x").unwrap();
    let mut refused = Command::new(BIN);
    refused.arg("mount").arg(&work).args(node_args(&node));
    let refused = refused.output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"), "{refused:?}");

    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    exercise(&mount, &work, &|args| node.cli(args));
    // On Linux 6.6 and later, writes through write-only handles skip the kernel's page
    // cache (what a kernel offers shows in the log either way).
    let granted = "write-only opens bypass the page cache (direct I/O)";
    assert_direct_io_on_linux_6_6(&mount, granted);
    if mount.log().contains(granted) {
        // A reader holding the file open maps it: none of the pages `cp` wrote is cached.
        let probe = mount.path("docs/direct-probe");
        std::fs::write(&probe, b"x").unwrap();
        let reader = std::fs::File::open(&probe).unwrap();
        let source = work.join("in-4");
        sh_ok(&format!("cp '{}' '{}'", source.display(), probe.display()));
        let len = std::fs::metadata(&source).unwrap().len() as usize;
        assert_eq!(reader.metadata().unwrap().len() as usize, len, "the reader sees the new size");
        assert_eq!(resident_pages(&reader, len), 0, "a write-only handle's bytes went into the page cache");
        // The check can fail: a handle that reads fills the cache, and mincore sees it.
        sh_ok(&format!("cat '{}' > /dev/null", probe.display()));
        assert!(resident_pages(&reader, len) > 0, "mincore never sees the mount's page cache");
    } else {
        beeline_dataplane::testkit::skip(
            "the_mount_on_a_single_node (write-only opens skip the page cache)",
            "the kernel does not grant FUSE direct I/O with mmap (Linux < 6.6)",
        );
    }
    // `beeline umount` unmounts, and the mount process ends by itself.
    let mut mount = mount;
    ok(&Command::new(BIN).arg("umount").arg(&mount.dir).output().unwrap());
    assert!(!is_mounted(&mount.dir));
    let deadline = Instant::now() + Duration::from_secs(20);
    let process = mount.process.as_mut().unwrap();
    while process.exited().is_none() {
        assert!(Instant::now() < deadline, "the mount process did not end after umount:\n{}", process.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--direct-reads`: every tool the single-node test runs works the same with reads that
/// skip the page cache (edge sizes in and out, appends, a mapped file, tags), and the log
/// says which mode the kernel granted.
#[test]
fn the_mount_with_direct_reads() {
    if skip_without_fuse("the_mount_with_direct_reads") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let (node, work) = node_and_work_dir(tmp.path());
    let mut args = node_args(&node);
    args.push("--direct-reads".into());
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &args);
    exercise(&mount, &work, &|args| node.cli(args));
    // Small reads through a handle without read-ahead still return every byte in order.
    let small_reads = sh_ok(&format!("dd if='{}' bs=4k status=none | sha256sum", mount.path("sizes/f3").display()));
    assert_eq!(small_reads.split_whitespace().next(), Some(sha256(&work.join("in-3")).as_str()));
    assert_direct_io_on_linux_6_6(
        &mount,
        "write-only opens and reads bypass the page cache (direct I/O, --direct-reads)",
    );
}

/// A node whose disk is full: writing a file that does not fit fails with ENOSPC (on the
/// write or at the latest on close, as `cp` reports it), leaves no file behind, and the
/// mount and every file stored before stay as they were; a file that fits still goes in.
#[test]
fn a_full_node_answers_enospc_and_loses_nothing() {
    if skip_without_fuse("a_full_node_answers_enospc_and_loses_nothing") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start(tmp.path(), &["--capacity-bytes", "12000000"]);
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("small"), pattern(1_000_000, 1)).unwrap();
    std::fs::write(work.join("big"), pattern(20_000_000, 2)).unwrap();
    sh_ok(&format!("cp '{}' '{}'", work.join("small").display(), mount.path("small").display()));

    let out = sh(&format!("cp '{}' '{}'", work.join("big").display(), mount.path("big").display()));
    assert!(
        !out.status.success(),
        "a 20 MB file went into a 12 MB node:
{}",
        mount.log()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "cp said: {stderr}");
    assert!(!sh_ok(&format!("ls '{}'", mount.dir.display())).lines().any(|name| name == "big"));
    assert!(node.cli(&["stat", "big"]).stdout.is_empty(), "a partial file was recorded");

    assert_eq!(sha256(&mount.path("small")), sha256(&work.join("small")));
    std::fs::write(work.join("fits"), pattern(2_000_000, 3)).unwrap();
    sh_ok(&format!("cp '{}' '{}'", work.join("fits").display(), mount.path("fits").display()));
    assert_eq!(sha256(&mount.path("fits")), sha256(&work.join("fits")));
}

/// A small tmpfs, unmounted (lazily) on drop, whatever the test's outcome.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount(dir: &Path, size_mib: usize) -> SmallTmpfs {
        std::fs::create_dir_all(dir).unwrap();
        sh_ok(&format!("mount -t tmpfs -o size={size_mib}m beeline-test-spool '{}'", dir.display()));
        SmallTmpfs(dir.to_owned())
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The mount's own spool disk fills while a file is written (a 12 MiB tmpfs, a 20 MB file:
/// its write-behind has started when the spool runs out): `cp` fails with ENOSPC and the
/// stored copy of the name stays as it was, not replaced by the part that fit; a new name
/// is not created; the mount goes on, and a file that fits still goes in.
#[test]
fn a_full_spool_disk_fails_the_write_and_keeps_the_stored_copy() {
    if skip_without_fuse("a_full_spool_disk_fails_the_write_and_keeps_the_stored_copy") {
        return;
    }
    if !common::is_root() {
        beeline_dataplane::testkit::skip(
            "a_full_spool_disk_fails_the_write_and_keeps_the_stored_copy",
            "mounting a small tmpfs for the spool needs root",
        );
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start(tmp.path(), &["--auto-tag", "false"]);
    // Before the mount, so dropped after it: the mount holds its spool files open.
    let spool = SmallTmpfs::mount(&tmp.path().join("spool"), 12);
    let mount = Mount::start(&tmp.path().join("mnt"), &spool.0, &node_args(&node));
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let old = pattern(3_000_000, 1);
    std::fs::write(work.join("old"), &old).unwrap();
    std::fs::write(work.join("big"), pattern(20_000_000, 2)).unwrap();
    std::fs::write(work.join("fits"), pattern(2_000_000, 3)).unwrap();
    let cp_in =
        |from: &str, to: &str| sh(&format!("cp '{}' '{}'", work.join(from).display(), mount.path(to).display()));
    let refused = |out: Output, what: &str| {
        assert!(!out.status.success(), "{what}: a 20 MB file went through a 12 MiB spool\n{}", mount.log());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("No space left on device"), "{what}: cp said: {stderr}");
    };
    assert!(cp_in("old", "doc").status.success(), "{}", mount.log());

    refused(cp_in("big", "doc"), "over a stored file");
    let back = node.cli(&["get", "doc", "-o", "-"]);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert!(back.stdout == old, "the stored copy was replaced by a failed write ({} bytes)", back.stdout.len());
    assert_eq!(sha256(&mount.path("doc")), sha256(&work.join("old")));

    refused(cp_in("big", "new"), "as a new name");
    assert!(node.cli(&["stat", "new"]).stdout.is_empty(), "a partial file was recorded");
    assert!(!sh_ok(&format!("ls '{}'", mount.dir.display())).lines().any(|name| name == "new"));

    assert!(cp_in("fits", "doc").status.success(), "{}", mount.log());
    assert_eq!(sha256(&mount.path("doc")), sha256(&work.join("fits")));
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// Inodes the mount handed the kernel live as long as the kernel holds them: after the
/// kernel drops its cache (and sends FUSE `forget`), `df -i` shows the table back near
/// empty instead of one inode per name ever seen.
#[test]
fn the_inode_table_follows_the_kernels_cache() {
    if skip_without_fuse("the_inode_table_follows_the_kernels_cache") {
        return;
    }
    let _serial = one_at_a_time();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        beeline_dataplane::testkit::skip(
            "the_inode_table_follows_the_kernels_cache",
            "needs root to write /proc/sys/vm/drop_caches",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start(tmp.path(), &["--auto-tag", "false"]);
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    // What `df -i` shows as used: files minus free files of statvfs.
    let used = || -> u64 {
        let path = std::ffi::CString::new(mount.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `stat` is writable for the call.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs {}: {}", mount.dir.display(), std::io::Error::last_os_error());
        stat.f_files - stat.f_ffree
    };
    let files = 200;
    sh_ok(&format!(
        "cd '{}' && mkdir d && for i in $(seq 1 {files}); do echo $i > d/f$i; done && ls -l d >/dev/null",
        mount.dir.display()
    ));
    let before = used();
    assert!(before > files, "{before} inodes used after {files} files were created");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        if used() < 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} inodes still held after the kernel dropped its cache:\n{}",
            used(),
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every file is still there, under new numbers.
    assert_eq!(sh_ok(&format!("cat '{}'", mount.path("d/f7").display())), "7\n");
    assert_eq!(sh_ok(&format!("ls '{}' | wc -l", mount.path("d").display())).trim(), files.to_string());
}

#[test]
fn sigterm_unmounts() {
    if skip_without_fuse("sigterm_unmounts") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start(tmp.path(), &[]);
    let mut mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    std::fs::write(mount.path("kept"), b"stored on close").unwrap();
    let status = mount.process.as_mut().unwrap().terminate();
    assert!(status.success(), "{status}: {}", mount.log());
    assert!(!is_mounted(&mount.dir));
    assert_eq!(ok(&node.cli(&["get", "kept", "-o", "-"])), "stored on close");
}

#[test]
fn the_mount_on_a_three_node_cluster_survives_a_node_killed_while_reading() {
    let test = "the_mount_on_a_three_node_cluster_survives_a_node_killed_while_reading";
    if skip_without_fuse(test) || skip_without_redis(test) {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Loopback::start(tmp.path(), 3);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let args = vec![
        "--metadata".into(),
        cluster.redis.url(),
        "--key-file".into(),
        tmp.path().join("cluster.key").display().to_string(),
    ];
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &args);
    exercise(&mount, &work, &|args| cluster.cli(args));

    // Files written through the mount, then a node killed while they are read back.
    std::fs::create_dir(mount.path("big")).unwrap();
    let mut expected = Vec::new();
    for index in 0..3u64 {
        let local = work.join(format!("big-{index}"));
        std::fs::write(&local, pattern(6 * CHUNK + 123, 100 + index)).unwrap();
        sh_ok(&format!("cp '{}' '{}'", local.display(), mount.path(&format!("big/{index}")).display()));
        expected.push(sha256(&local));
    }
    let reader = Command::new("sh")
        .arg("-c")
        .arg(format!("sha256sum '{}'/*", mount.path("big").display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cluster.nodes[1].0.as_mut().expect("running").kill9();
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success(), "reads failed after a node was killed: {out:?}\n{}", mount.log());
    let sums = String::from_utf8_lossy(&out.stdout).into_owned();
    for sum in &expected {
        assert!(sums.contains(sum.as_str()), "{sums}");
    }
    // And once more, with the node gone for good.
    for (index, sum) in expected.iter().enumerate() {
        assert_eq!(&sha256(&mount.path(&format!("big/{index}"))), sum);
    }
}

/// Writes `data` at the file's end in 1 MiB pieces, as `cp` does.
fn write_in_order(file: &mut std::fs::File, data: &[u8]) {
    use std::io::Write;
    for piece in data.chunks(MIB) {
        file.write_all(piece).unwrap();
    }
}

/// File `name` is stored as `expected`, and reads back so through the mount.
fn assert_stored(node: &TestNode, mount: &Mount, name: &str, expected: &[u8]) {
    let back = node.cli(&["get", name, "-o", "-"]);
    assert!(back.status.success(), "{name}: {}\n{}", String::from_utf8_lossy(&back.stderr), mount.log());
    assert!(back.stdout == expected, "{name} was stored different from what was written");
    assert!(std::fs::read(mount.path(name)).unwrap() == expected, "{name} reads back different");
}

/// A file written in order is stored while it is being written (write-behind): with the
/// file still open, the node already holds its first chunks. Written back into, truncated
/// or removed while open, the write-behind gives up and the file is stored whole on close
/// (or, removed, not at all), byte for byte what was written.
#[test]
fn files_written_in_order_are_stored_behind_the_writer() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    if skip_without_fuse("files_written_in_order_are_stored_behind_the_writer") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    // Counters from the metrics page, read in this process: a `beeline node status` child
    // would inherit the open file and close it at exec, and every close is a FUSE flush,
    // which stores the file.
    let metrics = free_tcp_address();
    let node = TestNode::start(tmp.path(), &["--metrics-listen", &metrics]);
    let chunks_stored = || metric(&metrics, "beeline_puts_total");
    let spool = tmp.path().join("spool");
    let mount = Mount::start(&tmp.path().join("mnt"), &spool, &node_args(&node));
    let stored_back = |name: &str, expected: &[u8]| assert_stored(&node, &mount, name, expected);

    // In order: most of it is on the node before the close.
    let data = pattern(26 * MIB + 5, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = puts_so_far(&metrics, deadline);
    let mut file = std::fs::File::create(mount.path("in-order")).unwrap();
    write_in_order(&mut file, &data[..24 * MIB]);
    // Published every 100 ms: wait (bounded) for the chunks written so far.
    while chunks_stored().unwrap_or(0.0) < before + 5.0 {
        assert!(Instant::now() < deadline, "the file was not stored while written:\n{}", mount.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    write_in_order(&mut file, &data[24 * MIB..]);
    drop(file);
    stored_back("in-order", &data);

    // Written back into once the write-behind runs.
    let mut data = pattern(16 * MIB, 2);
    let mut file = std::fs::File::create(mount.path("rewritten")).unwrap();
    write_in_order(&mut file, &data[..12 * MIB]);
    file.write_all_at(b"written again", 3 * MIB as u64).unwrap();
    data[3 * MIB..3 * MIB + 13].copy_from_slice(b"written again");
    write_in_order(&mut file, &data[12 * MIB..]);
    drop(file);
    stored_back("rewritten", &data);

    // Truncated while open, then written on.
    let data = pattern(12 * MIB, 3);
    let mut file = std::fs::File::create(mount.path("truncated")).unwrap();
    write_in_order(&mut file, &data);
    file.set_len(5 * MIB as u64).unwrap();
    file.seek(SeekFrom::End(0)).unwrap();
    let tail = pattern(MIB + 7, 4);
    file.write_all(&tail).unwrap();
    drop(file);
    stored_back("truncated", &[&data[..5 * MIB], &tail[..]].concat());

    // Removed while open: never stored.
    let mut file = std::fs::File::create(mount.path("removed")).unwrap();
    write_in_order(&mut file, &pattern(12 * MIB, 5));
    std::fs::remove_file(mount.path("removed")).unwrap();
    file.write_all(b"more").unwrap();
    drop(file);
    let listing = ok(&node.cli(&["ls"]));
    assert!(!listing.lines().any(|line| line.contains("removed")), "{listing}");

    // Once stored, a spool is emptied, so a `sync` does not write the file to the disk a
    // second time; a descriptor still open on it (a `dup`) reads and writes it as before.
    let spool_bytes = || -> u64 {
        let pid = mount.process.as_ref().and_then(Process::pid).expect("the mount runs");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(&spool)))
            .map(|fd| std::fs::metadata(fd.path()).map(|meta| meta.len()).unwrap_or(0))
            .sum()
    };
    let data = pattern(10 * MIB + 3, 6);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mount.path("kept-open"))
        .unwrap();
    write_in_order(&mut file, &data);
    assert!(spool_bytes() >= data.len() as u64, "the file is in the spool while written");
    let mut dup = file.try_clone().unwrap();
    drop(file); // a close: FUSE flush, the file is stored
    assert_eq!(spool_bytes(), 0, "a stored file's spool keeps its pages");
    let mut head = vec![0u8; 4096];
    dup.read_exact_at(&mut head, 5 * MIB as u64).unwrap();
    assert!(head == data[5 * MIB..5 * MIB + 4096], "read back through the open descriptor");
    dup.seek(SeekFrom::End(0)).unwrap();
    dup.write_all(b"and more").unwrap();
    drop(dup);
    stored_back("kept-open", &[&data[..], b"and more"].concat());
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// Bytes of the disk the mount's open spool files (under `spool`) take: freed ranges take
/// none, though the files keep their length.
fn spool_allocated_bytes(mount: &Mount, spool: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let pid = mount.process.as_ref().and_then(Process::pid).expect("the mount runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(spool)))
        .map(|fd| std::fs::metadata(fd.path()).map(|meta| meta.blocks() * 512).unwrap_or(0))
        .sum()
}

/// Waits (bounded) until the spool files take at most `bytes_max` of the disk.
fn wait_spool_freed(mount: &Mount, spool: &Path, bytes_max: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while spool_allocated_bytes(mount, spool) > bytes_max {
        assert!(
            Instant::now() < deadline,
            "{what}: the spool still takes {} bytes (at most {bytes_max} expected):\n{}",
            spool_allocated_bytes(mount, spool),
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A write-behind frees from the spool what the node made durable: with 28 MiB written and
/// the file still open, the spool keeps its length but takes at most 12 MiB of the disk.
/// The open file still reads back whole (the put is finished and the spool refilled from
/// the node), takes a write back into a freed range, and a truncate there: what is stored
/// on close is byte for byte what was written.
#[test]
fn the_spool_frees_what_the_node_made_durable_and_the_open_file_stays_whole() {
    use std::os::unix::fs::FileExt;
    if skip_without_fuse("the_spool_frees_what_the_node_made_durable_and_the_open_file_stays_whole") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start(tmp.path(), &["--auto-tag", "false"]);
    let spool = tmp.path().join("spool");
    let mount = Mount::start(&tmp.path().join("mnt"), &spool, &node_args(&node));
    let open_rw = |name: &str| {
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(mount.path(name)).unwrap()
    };
    let stored_back = |name: &str, expected: &[u8]| assert_stored(&node, &mount, name, expected);

    // Read back, then written back into, while open.
    let mut data = pattern(28 * MIB, 11);
    let mut file = open_rw("freed");
    write_in_order(&mut file, &data);
    wait_spool_freed(&mount, &spool, 12 * MIB as u64, "28 MiB written in order");
    assert_eq!(std::fs::metadata(mount.path("freed")).unwrap().len(), data.len() as u64, "the length stays");
    // Through a handle of its own, so that the kernel asks the mount, not its page cache.
    let mut whole = vec![0u8; data.len()];
    std::fs::File::open(mount.path("freed")).unwrap().read_exact_at(&mut whole, 0).unwrap();
    assert!(whole == data, "the open file read back different once its spool was freed");
    assert!(spool_allocated_bytes(&mount, &spool) >= data.len() as u64, "the spool was refilled for the read");
    file.write_all_at(b"written again", MIB as u64 + 3).unwrap();
    data[MIB + 3..MIB + 16].copy_from_slice(b"written again");
    let tail = pattern(3 * MIB + 5, 12);
    file.write_all_at(&tail, data.len() as u64).unwrap();
    data.extend_from_slice(&tail);
    drop(file);
    stored_back("freed", &data);

    // Truncated into the freed part, then written on.
    let data = pattern(20 * MIB, 13);
    let mut file = open_rw("cut");
    write_in_order(&mut file, &data);
    wait_spool_freed(&mount, &spool, 8 * MIB as u64, "20 MiB written in order");
    file.set_len(6 * MIB as u64 + 1).unwrap();
    let tail = pattern(MIB + 7, 14);
    file.write_all_at(&tail, 6 * MIB as u64 + 1).unwrap();
    drop(file);
    stored_back("cut", &[&data[..6 * MIB + 1], &tail[..]].concat());
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// A writer that pauses for a quarter of the node's grace period gets what the
/// write-behind freed put back into the spool: the node's garbage collection then takes
/// the stalled put's chunks (its commit fails, as it did before the spool was freed), and
/// the file is still stored whole from the spool on close.
#[test]
fn a_writer_pausing_past_the_grace_period_loses_nothing_that_was_freed() {
    use std::os::unix::fs::FileExt;
    if skip_without_fuse("a_writer_pausing_past_the_grace_period_loses_nothing_that_was_freed") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let metrics = free_tcp_address();
    let node =
        TestNode::start(tmp.path(), &["--auto-tag", "false", "--gc-grace-ms", "2000", "--metrics-listen", &metrics]);
    let spool = tmp.path().join("spool");
    let mount = Mount::start(&tmp.path().join("mnt"), &spool, &node_args(&node));
    let data = pattern(23 * MIB + 7, 17);
    let mut file = std::fs::File::create(mount.path("paused-long")).unwrap();
    write_in_order(&mut file, &data[..20 * MIB]);
    wait_spool_freed(&mount, &spool, 8 * MIB as u64, "20 MiB written in order");
    // The writer pauses: after 500 ms (a quarter of the grace) the spool is whole again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while spool_allocated_bytes(&mount, &spool) < 20 * MIB as u64 {
        assert!(Instant::now() < deadline, "the spool was not refilled while the writer paused:\n{}", mount.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the node collects the stalled put's five chunks (published every 100 ms).
    while metric(&metrics, "beeline_gc_chunks_collected_total").unwrap_or(0.0) < 5.0 {
        assert!(Instant::now() < deadline, "the stalled put's chunks were not collected:\n{}", mount.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    file.write_all_at(&data[20 * MIB..], 20 * MIB as u64).unwrap();
    drop(file);
    assert_stored(&node, &mount, "paused-long", &data);
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// A write-behind that fails after freeing part of the spool (the node fills up: 3 of the
/// 6 chunks fit) reads back from the node what it had freed: `fsync` answers ENOSPC, and
/// the open file still reads back whole, byte for byte what was written. The first 12 MiB
/// (the 3 chunks that fit) are written and freed before the rest, so that freeing comes
/// before the refusal whatever the timing (with all 24 MiB written at once, the 4th chunk
/// could be refused before any chunk was reported durable, and nothing was freed).
#[test]
fn a_write_behind_failing_after_freeing_the_spool_reads_it_back_from_the_node() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    if skip_without_fuse("a_write_behind_failing_after_freeing_the_spool_reads_it_back_from_the_node") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start(tmp.path(), &["--auto-tag", "false", "--capacity-bytes", "14000000"]);
    let spool = tmp.path().join("spool");
    let mount = Mount::start(&tmp.path().join("mnt"), &spool, &node_args(&node));
    let data = pattern(24 * MIB, 15);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mount.path("too-big"))
        .unwrap();
    let (fits, rest) = data.split_at(3 * CHUNK);
    for piece in fits.chunks(MIB) {
        file.write_all(piece).unwrap();
    }
    wait_spool_freed(&mount, &spool, CHUNK as u64, "12 MiB written in order to a 14 MB node");
    for piece in rest.chunks(MIB) {
        file.write_all(piece).unwrap();
    }
    let error = file.sync_all().expect_err("24 MiB went into a 14 MB node");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}\n{}", mount.log());
    assert!(spool_allocated_bytes(&mount, &spool) >= data.len() as u64, "what was freed is back in the spool");
    let mut whole = vec![0u8; data.len()];
    std::fs::File::open(mount.path("too-big")).unwrap().read_exact_at(&mut whole, 0).unwrap();
    assert!(whole == data, "the file read back different after its write-behind failed");
    drop(file);
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// For a test of what the node keeps in its page cache: the serial guard, a temporary
/// directory and a node in it without a tagger (it would read the stored files back into
/// the page cache); `None`, with the reason printed, where FUSE or `fincore` is missing or
/// the directory is on tmpfs, whose pages cannot be dropped.
fn page_cache_test(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir, TestNode)> {
    if skip_without_fuse(test) {
        return None;
    }
    if !have("fincore") {
        beeline_dataplane::testkit::skip(test, "`fincore` (util-linux) is not installed");
        return None;
    }
    let serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fs_type = sh_ok(&format!("stat -f -c %T '{}'", tmp.path().display()));
    if fs_type.trim() == "tmpfs" {
        beeline_dataplane::testkit::skip(test, "the temporary directory is on tmpfs, whose pages cannot be dropped");
        return None;
    }
    let node = TestNode::start(tmp.path(), &["--auto-tag", "false"]);
    Some((serial, tmp, node))
}

/// A file copied in through the mount is stored with the not-read-soon hint: once its
/// puts are durable the node keeps (almost) none of it in its page cache, where the same
/// file stored by `beeline put` stays cached. Both read back whole.
#[test]
fn a_file_copied_in_leaves_the_nodes_page_cache_once_durable() {
    let Some((_serial, tmp, node)) = page_cache_test("a_file_copied_in_leaves_the_nodes_page_cache_once_durable")
    else {
        return;
    };
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    let data = pattern(24 * MIB, 16);
    std::fs::write(work.join("big"), &data).unwrap();

    let before = node.segment_bytes_cached();
    sh_ok(&format!("cp '{}' '{}'", work.join("big").display(), mount.path("copied").display()));
    // The sync thread drops the pages just after it reports them durable: wait, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.segment_bytes_cached().saturating_sub(before) > MIB as u64 {
        assert!(
            Instant::now() < deadline,
            "{} bytes of a 24 MiB copy in still cached by the node:\n{}",
            node.segment_bytes_cached().saturating_sub(before),
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // The control: the same file stored by `beeline put` over UDP stays cached (half is the
    // bar: the kernel may evict a few pages under other tests' memory use). Over shared
    // memory it would not: large chunks from there are written around the page cache.
    let before = node.segment_bytes_cached();
    ok(&node.cli(&["put", work.join("big").to_str().unwrap(), "--as", "put", "--transport", "udp"]));
    let cached = node.segment_bytes_cached().saturating_sub(before);
    assert!(cached >= data.len() as u64 / 2, "only {cached} bytes of a 24 MiB `beeline put` cached");

    for name in ["copied", "put"] {
        let back = node.cli(&["get", name, "-o", "-"]);
        assert!(back.status.success() && back.stdout == data, "{name} did not read back whole");
    }
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// A file read through the mount is read with the get hint: the node drops each chunk's
/// pages once read, as the kernel's page cache of the mount holds them, so after a whole
/// read it keeps (almost) none of a file it had all cached. The control: `beeline get` of
/// the same file leaves it cached again.
#[test]
fn a_file_read_through_the_mount_leaves_the_nodes_page_cache() {
    let Some((_serial, tmp, node)) = page_cache_test("a_file_read_through_the_mount_leaves_the_nodes_page_cache")
    else {
        return;
    };
    let data = pattern(24 * MIB + 100, 17);
    let source = tmp.path().join("source");
    std::fs::write(&source, &data).unwrap();
    let before = node.segment_bytes_cached();
    // Over UDP, so that the node's page cache holds the file.
    ok(&node.cli(&["put", source.to_str().unwrap(), "--as", "big", "--transport", "udp"]));
    let stored = node.segment_bytes_cached().saturating_sub(before);
    assert!(stored >= data.len() as u64 / 2, "only {stored} bytes of a fresh `beeline put` cached");
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));

    // Each get answers after its chunk's pages were dropped: nothing to wait for.
    assert_eq!(sha256(&mount.path("big")), sha256(&source), "the file read through the mount differs");
    let left = node.segment_bytes_cached().saturating_sub(before);
    assert!(left < MIB as u64, "{left} bytes of a 24 MiB file read through the mount still cached by the node");

    let back = node.cli(&["get", "big", "-o", "-"]);
    assert!(back.status.success() && back.stdout == data, "`beeline get` did not read the file back whole");
    let cached = node.segment_bytes_cached().saturating_sub(before);
    assert!(cached >= data.len() as u64 / 2, "only {cached} bytes cached after a `beeline get`: the hint stuck");
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// A file read twice through the mount is fetched from the node once: the second open of
/// the same stored version keeps the kernel's page cache (`FOPEN_KEEP_CACHE`). A new
/// version of the same size stored by another client meanwhile is read at the next open,
/// not the cached old one; so is what a write through the mount changed.
#[test]
fn a_file_read_again_comes_from_the_kernels_cache_until_it_changes() {
    if skip_without_fuse("a_file_read_again_comes_from_the_kernels_cache_until_it_changes") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    // No tagger: nothing but the mount reads from the node.
    let node = TestNode::start(tmp.path(), &["--auto-tag", "false"]);
    // Larger than the mount's own chunk cache (16 chunks), which would serve a small file
    // read again whatever the kernel keeps.
    let (first, second) = (pattern(18 * CHUNK + 100, 18), pattern(18 * CHUNK + 100, 19));
    let source = tmp.path().join("source");
    std::fs::write(&source, &first).unwrap();
    ok(&node.cli(&["put", source.to_str().unwrap(), "--as", "big"]));
    let marker = tmp.path().join("marker");
    std::fs::write(&marker, b"m").unwrap();
    ok(&node.cli(&["put", marker.to_str().unwrap(), "--as", "marker"]));
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    // The mount's chunk reads since `before` (its whole-chunk requests over shared memory),
    // once the counters (published every 100 ms) show a `beeline get` over UDP made after
    // them: everything before it is counted then.
    let reads_since = |before: &std::collections::HashMap<String, u64>| {
        ok(&node.cli(&["get", "marker", "-o", "-", "--transport", "udp"]));
        let now =
            node.wait_counters(&[], "the marker's get counted", |c| c["fragments_served"] > before["fragments_served"]);
        now["local_requests"] - before["local_requests"]
    };

    let before = node.counters(&[]);
    assert!(std::fs::read(mount.path("big")).unwrap() == first, "the first read differs");
    let first_read = reads_since(&before);
    assert!(first_read >= 19, "a 19-chunk file read with {first_read} chunk reads");
    let before = node.counters(&[]);
    assert!(std::fs::read(mount.path("big")).unwrap() == first, "the second read differs");
    let second_read = reads_since(&before);
    assert!(second_read < first_read / 2, "the second read of the same version made {second_read} chunk reads");

    std::fs::write(&source, &second).unwrap();
    ok(&node.cli(&["put", source.to_str().unwrap(), "--as", "big"]));
    assert!(std::fs::read(mount.path("big")).unwrap() == second, "a new version read as the cached old one");

    let mut file = std::fs::OpenOptions::new().write(true).open(mount.path("big")).unwrap();
    std::io::Write::write_all(&mut file, b"changed").unwrap();
    drop(file);
    let mut expected = second.clone();
    expected[..7].copy_from_slice(b"changed");
    assert!(std::fs::read(mount.path("big")).unwrap() == expected, "a write through the mount read as before it");
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// Reading a file through the mount has the chunks after the one being read fetched in
/// the background: after one read of its first MiB, the node has served the first chunk
/// and the 8 after it; the whole file then reads back right, also from the middle.
#[test]
fn reads_fetch_the_next_chunks_ahead() {
    use std::io::{Read, Seek, SeekFrom};
    if skip_without_fuse("reads_fetch_the_next_chunks_ahead") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    // No tagger: nothing but the mount reads from the node.
    let node = TestNode::start(tmp.path(), &["--auto-tag", "false"]);
    let data = pattern(12 * CHUNK + 100, 7);
    let source = tmp.path().join("source");
    std::fs::write(&source, &data).unwrap();
    ok(&node.cli(&["put", source.to_str().unwrap(), "--as", "big"]));
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    let before = node.counters(&[])["gets"];
    let mut file = std::fs::File::open(mount.path("big")).unwrap();
    let mut head = vec![0u8; MIB];
    file.read_exact(&mut head).unwrap();
    assert!(head == data[..MIB], "the first MiB reads back different");
    let served = node.wait_counters(&[], "the chunks after the first fetched ahead", |c| c["gets"] >= before + 9);
    assert!(served["gets"] <= before + 13, "more gets than the file has chunks: {}", served["gets"] - before);
    file.seek(SeekFrom::Start(5 * CHUNK as u64 + 17)).unwrap();
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    assert!(rest == data[5 * CHUNK + 17..], "the file from its middle reads back different");
    drop(file);
    assert!(std::fs::read(mount.path("big")).unwrap() == data, "the whole file reads back different");
}

/// A node killed (SIGKILL) and started again while a file is being written through the
/// mount, its write-behind running: `fsync` and the close succeed and the file is stored
/// byte for byte. Starting the node forks processes from this test, and each one's close
/// of the inherited descriptor at `exec` is a FUSE flush, so the file is also stored (or
/// tried, while the node is down) midway, as it would be on a real machine.
#[test]
fn a_node_restarted_while_a_file_is_written_loses_nothing() {
    use std::io::Write;
    if skip_without_fuse("a_node_restarted_while_a_file_is_written_loses_nothing") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(tmp.path(), &["--auto-tag", "false"]);
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &node_args(&node));
    let data = pattern(20 * MIB + 11, 8);
    let mut file = std::fs::File::create(mount.path("through-a-restart")).unwrap();
    for piece in data[..12 * MIB].chunks(MIB) {
        file.write_all(piece).unwrap();
    }
    node.process().kill9();
    node.spawn();
    for piece in data[12 * MIB..].chunks(MIB) {
        file.write_all(piece).unwrap();
    }
    file.sync_all().unwrap_or_else(|error| panic!("fsync after the restart: {error}\n{}", mount.log()));
    drop(file);
    let back = node.cli(&["get", "through-a-restart", "-o", "-"]);
    assert!(back.status.success(), "{}\n{}", String::from_utf8_lossy(&back.stderr), mount.log());
    assert!(back.stdout == data, "the file written across the restart was stored different");
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
}

/// The chunk puts the node has stored so far, from its metrics page (read in this process:
/// a `beeline node status` child would inherit an open file of the mount and close it at
/// exec, and every close is a FUSE flush, which stores the file); waits (bounded by
/// `deadline`) for the page to answer.
fn puts_so_far(metrics: &str, deadline: Instant) -> f64 {
    loop {
        match metric(metrics, "beeline_puts_total") {
            Some(count) => return count,
            None => assert!(Instant::now() < deadline, "the node's metrics page never answered"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Over UDP, a write-behind keeps the chunks it has started moving while it waits for its
/// writer: with the file still open and nothing more written, every whole chunk written so
/// far is stored. Its thread used to wait for more bytes inside the read, and the
/// fragments of the chunks in flight waited with it until the writer wrote on or closed.
#[test]
fn a_write_behind_over_udp_stores_what_it_was_given_while_the_writer_pauses() {
    use std::io::Write;
    if skip_without_fuse("a_write_behind_over_udp_stores_what_it_was_given_while_the_writer_pauses") {
        return;
    }
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let metrics = free_tcp_address();
    let node = TestNode::start(tmp.path(), &["--metrics-listen", &metrics, "--auto-tag", "false"]);
    let chunks_stored = || metric(&metrics, "beeline_puts_total");
    let mut args = node_args(&node);
    args.extend(["--transport".to_owned(), "udp".to_owned()]);
    let mount = Mount::start(&tmp.path().join("mnt"), &tmp.path().join("spool"), &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = puts_so_far(&metrics, deadline);
    let data = pattern(24 * MIB + 5, 9);
    let mut file = std::fs::File::create(mount.path("paused")).unwrap();
    for piece in data[..24 * MIB].chunks(MIB) {
        file.write_all(piece).unwrap();
    }
    // Six whole chunks written; the writer pauses before the seventh.
    while chunks_stored().unwrap_or(0.0) < before + 6.0 {
        assert!(
            Instant::now() < deadline,
            "{} of 6 chunks stored while the writer paused:\n{}",
            chunks_stored().unwrap_or(0.0) - before,
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    file.write_all(&data[24 * MIB..]).unwrap();
    drop(file);
    let back = node.cli(&["get", "paused", "-o", "-"]);
    assert!(back.status.success(), "{}\n{}", String::from_utf8_lossy(&back.stderr), mount.log());
    assert!(back.stdout == data, "the paused file was stored different");
}
