use super::*;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::process::Command;

/// Names in `dir`, sorted: what a test expects to find there and nothing more.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn write_all(path: &Path, base_name: Option<&str>, content: &[u8]) -> Result<String, String> {
    let mut output = Output::open(path, base_name)?;
    output.writer().write_all(content).unwrap();
    let shown = output.shown().to_owned();
    output.finish()?;
    Ok(shown)
}

fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

fn run(program: &str, args: &[&OsStr]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

#[test]
fn a_new_file_appears_whole_with_the_umask_mode_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    write_all(&out, Some("ignored"), b"content").unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"content");
    assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o666 & !umask());
    assert_eq!(entries(dir.path()), ["out"]);
}

#[test]
fn a_replaced_file_keeps_its_mode_and_is_swapped_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    fs::write(&out, b"old content, longer than the new").unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o640)).unwrap();
    let old_inode = fs::metadata(&out).unwrap().ino();
    write_all(&out, None, b"new").unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"new");
    let meta = fs::metadata(&out).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_ne!(meta.ino(), old_inode, "replaced in place rather than renamed over");
    assert_eq!(entries(dir.path()), ["out"]);
}

/// An error anywhere before `finish` (a failed checksum, a lost node) drops the output:
/// the old file stays as it was, a new one never appears, no temporary file remains.
#[test]
fn dropping_mid_write_leaves_the_destination_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing");
    fs::write(&existing, b"keep me").unwrap();
    for path in [existing.clone(), dir.path().join("absent")] {
        let mut output = Output::open(&path, None).unwrap();
        output.writer().write_all(&vec![7u8; 3 << 20]).unwrap();
        assert_eq!(entries(dir.path()).len(), 2, "the temporary file exists while writing");
        drop(output);
    }
    assert_eq!(fs::read(&existing).unwrap(), b"keep me");
    assert_eq!(entries(dir.path()), ["existing"]);
}

#[test]
fn a_directory_receives_the_base_name_as_cp_does() {
    let dir = tempfile::tempdir().unwrap();
    let shown = write_all(dir.path(), Some("photo.jpg"), b"jpeg").unwrap();
    assert_eq!(fs::read(dir.path().join("photo.jpg")).unwrap(), b"jpeg");
    assert!(shown.ends_with("/photo.jpg"), "{shown}");
    // Through a symbolic link to the directory too.
    let link = tempfile::tempdir().unwrap();
    symlink(dir.path(), link.path().join("to-dir")).unwrap();
    write_all(&link.path().join("to-dir"), Some("second"), b"2").unwrap();
    assert_eq!(fs::read(dir.path().join("second")).unwrap(), b"2");
    assert_eq!(entries(dir.path()), ["photo.jpg", "second"]);
}

#[test]
fn a_directory_without_a_usable_base_name_or_holding_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let message = Output::open(dir.path(), None).err().unwrap();
    assert!(message.contains("is a directory"), "{message}");
    fs::create_dir(dir.path().join("taken")).unwrap();
    let message = Output::open(dir.path(), Some("taken")).err().unwrap();
    assert!(message.contains("taken is a directory"), "{message}");
    assert_eq!(entries(dir.path()), ["taken"]);
    assert!(entries(&dir.path().join("taken")).is_empty());
}

#[test]
fn base_names_are_what_follows_the_last_slash() {
    assert_eq!(base_name("photo.jpg"), Some("photo.jpg"));
    assert_eq!(base_name("images/2026/big.iso"), Some("big.iso"));
    for unusable in ["", "dir/", "a/.", "..", "a/.."] {
        assert_eq!(base_name(unusable), None, "{unusable:?}");
    }
}

/// The reproduction of issue #11: `mknod n c 1 3; beeline get f -o n` left `n` a regular
/// file. Done on a device node of our own, never on `/dev/null` itself.
#[test]
fn a_character_device_is_written_in_place_and_stays_a_device() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        beeline_dataplane::testkit::skip(
            "a_character_device_is_written_in_place_and_stays_a_device",
            "needs root to mknod a character device",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("n");
    run("mknod", &[null.as_os_str(), OsStr::new("c"), OsStr::new("1"), OsStr::new("3")]);
    write_all(&null, None, b"into the void").unwrap();
    let meta = fs::symlink_metadata(&null).unwrap();
    assert!(meta.file_type().is_char_device(), "the device node was replaced: {meta:?}");
    assert_eq!(meta.rdev(), libc::makedev(1, 3));
    assert_eq!(entries(dir.path()), ["n"]);
}

#[test]
fn a_fifo_is_written_in_place_and_stays_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    run("mkfifo", &[fifo.as_os_str()]);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut content = Vec::new();
            File::open(fifo).unwrap().read_to_end(&mut content).unwrap();
            content
        })
    };
    write_all(&fifo, None, b"through the pipe").unwrap();
    assert_eq!(reader.join().unwrap(), b"through the pipe");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(entries(dir.path()), ["pipe"]);
}

/// Documented choice, as `cp` does: a link at OUT is written through; the link stays and
/// the file it points to gets the content.
#[test]
fn a_symbolic_link_to_a_file_is_written_through_and_stays_a_link() {
    let links = tempfile::tempdir().unwrap();
    let targets = tempfile::tempdir().unwrap();
    let target = targets.path().join("target");
    fs::write(&target, b"old").unwrap();
    let link = links.path().join("out");
    symlink(&target, &link).unwrap();
    write_all(&link, None, b"new").unwrap();
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), target);
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(entries(links.path()), ["out"]);
    assert_eq!(entries(targets.path()), ["target"]);
}

#[test]
fn a_dangling_symbolic_link_is_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("out");
    symlink(dir.path().join("victim"), &link).unwrap();
    let message = Output::open(&link, None).err().unwrap();
    assert!(message.contains("symbolic link to nothing"), "{message}");
    assert_eq!(entries(dir.path()), ["out"]);
}

#[test]
fn sockets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let message = Output::open(&socket, None).err().unwrap();
    assert!(message.contains("not a file, device or pipe"), "{message}");
}

/// The other half of the planted-symlink reproduction: a link planted at the exact name
/// the temporary file gets is neither followed nor reused; another name is drawn.
#[test]
fn exclusive_creation_never_follows_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let destination = dir.path().join("out");
    let planted = dir.path().join(temp_name(b"out", 1));
    symlink(&victim, &planted).unwrap();
    assert_eq!(create_exclusive(&planted).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    let mut draws = [1u64, 2].into_iter();
    let (mut file, temp) = create_temp_with(&destination, &mut || draws.next().unwrap()).unwrap();
    assert_eq!(temp.path(), dir.path().join(temp_name(b"out", 2)));
    file.write_all(b"mine").unwrap();
    temp.rename_over(&destination).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(fs::read(&destination).unwrap(), b"mine");
    assert!(fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
}

#[test]
fn the_destination_turning_into_a_link_while_writing_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let destination = dir.path().join("out");
    let mut output = Output::open(&destination, None).unwrap();
    output.writer().write_all(b"data").unwrap();
    symlink("/nonexistent", &destination).unwrap();
    let message = output.finish().unwrap_err();
    assert!(message.contains("no longer a regular file"), "{message}");
    assert_eq!(entries(dir.path()), ["out"]);
    assert!(fs::symlink_metadata(&destination).unwrap().file_type().is_symlink());
}

#[test]
fn temporary_names_fit_one_file_name_and_hide() {
    let long = vec![b'x'; FILE_NAME_BYTES_MAX];
    let name = temp_name(&long, u64::MAX);
    assert_eq!(name.len(), FILE_NAME_BYTES_MAX);
    assert!(name.as_bytes().starts_with(b".xxx") && name.as_bytes().ends_with(TEMP_SUFFIX.as_bytes()));
    assert_eq!(temp_name(b"a.jpg", 0x1f), OsStr::new(".a.jpg.000000000000001f.beeline-partial"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(OsStr::from_bytes(&long));
    write_all(&out, None, b"long").unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"long");
}
