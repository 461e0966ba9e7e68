//! `beeline hw list` and `beeline hw check` run as a binary against this machine: every
//! shipped profile, broken profiles, a device that is not here, a veth pair with the right
//! and a wrong MTU, and the hugepage verdict with nr_hugepages set to known values.
//!
//! Tests that change the host (veth pairs, hugepages) need root; they check and skip with
//! a message otherwise, and undo their changes with a Drop guard whatever the outcome.

mod common;
use common::{Veth, is_root, sh, unique_id};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_beeline");

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-configs")
}

fn profile_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(profiles_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 6, "expected the six shipped profiles, found {names:?}");
    names
}

fn beeline(args: &[&str]) -> Output {
    // Run from a directory without ./hw-configs, so the source tree's profiles are used.
    Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The check line whose verdict and name start it, e.g. `line(out, "mtu")`.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"))
}

fn verdict(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

macro_rules! require_root {
    ($name:literal) => {
        if !is_root() {
            beeline_dataplane::testkit::skip($name, "needs root (it changes the host and restores it)");
            return;
        }
    };
}

#[test]
fn list_shows_every_profile() {
    let output = beeline(&["hw", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    for name in profile_names() {
        let listed = out.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()));
        let listed = listed.unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        assert!(!listed.contains("(bad)"), "{listed}");
    }
}

/// Every shipped profile checks to a verdict (never "bad profile"), its [node] keys
/// resolve, and every non-ok line says what to run.
#[test]
fn every_profile_checks_with_a_fix_for_each_non_ok_line() {
    for name in profile_names() {
        let output = beeline(&["hw", "check", "--profile", &name]);
        let out = stdout(&output);
        let code = output.status.code();
        assert!(code == Some(0) || code == Some(1), "{name}: exit {code:?}\n{out}{}", stderr(&output));
        assert!(out.starts_with(&format!("profile {name} (")), "{out}");
        assert_eq!(verdict(line(&out, "node")), "ok", "{name}: [node] must validate\n{out}");
        let summary = out.lines().last().unwrap();
        assert!(summary.starts_with("summary: "), "{out}");
        let fails = out.lines().filter(|l| verdict(l) == "FAIL").count();
        assert!(summary.contains(&format!(" {fails} FAIL")), "{summary}");
        assert_eq!(code == Some(1), fails > 0, "{name}: exit code and FAIL lines disagree\n{out}");
        for l in out.lines().filter(|l| matches!(verdict(l), "warn" | "FAIL")) {
            assert!(l.contains("; fix: "), "{name}: non-ok line without a fix: {l}");
        }
    }
}

#[test]
fn e810_on_this_machine_is_missing_its_device() {
    let output = beeline(&["hw", "check", "--profile", "e810"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let device = line(&out, "device");
    assert_eq!(verdict(device), "FAIL", "{out}");
    assert!(device.contains("0000:3b:00.0 is missing") && device.contains("--device"), "{device}");
    // The E810 profile needs a real IOMMU and vfio-pci; say how to get them when absent.
    let iommu = line(&out, "iommu");
    if Path::new("/sys/kernel/iommu_groups").read_dir().map(|mut d| d.next().is_none()).unwrap_or(true) {
        assert!(verdict(iommu) == "FAIL" && iommu.contains("intel_iommu=on iommu=pt"), "{iommu}");
    } else {
        assert_eq!(verdict(iommu), "ok", "{iommu}");
    }
}

/// The virtio profile against this machine's own virtio-net device (if it has one): the
/// device is recognised, and unless it is bound to vfio-pci the fix is dpdk-devbind.
#[test]
fn virtio_profile_against_this_machines_virtio_nic() {
    let found = std::fs::read_dir("/sys/bus/pci/devices").unwrap().flatten().find(|entry| {
        let read = |file: &str| std::fs::read_to_string(entry.path().join(file)).unwrap_or_default();
        read("vendor").trim() == "0x1af4" && read("class").trim() == "0x020000"
    });
    let Some(entry) = found else {
        beeline_dataplane::testkit::skip(
            "virtio_profile_against_this_machines_virtio_nic",
            "no virtio-net PCI device here",
        );
        return;
    };
    let address = entry.file_name().to_string_lossy().into_owned();
    let output = beeline(&["hw", "check", "--profile", "virtio", "--device", &address]);
    let out = stdout(&output);
    assert!(verdict(line(&out, "device")) == "ok" && out.contains("(1af4:10"), "{out}");
    let driver = line(&out, "driver");
    let bound = std::fs::read_link(entry.path().join("driver")).ok();
    if bound.as_ref().and_then(|p| p.file_name()).is_some_and(|n| n == "vfio-pci") {
        assert_eq!(verdict(driver), "ok", "{driver}");
    } else {
        assert_eq!(verdict(driver), "FAIL", "{driver}");
        assert!(driver.contains(&format!("dpdk-devbind.py -b vfio-pci {address}")), "{driver}");
        assert_eq!(output.status.code(), Some(1));
    }
    // The operator is told to put this address in the node config.
    assert!(out.contains(&format!("dpdk_devices = [\"{address}\"]")), "{out}");
}

#[test]
fn broken_or_missing_profile_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(profiles_dir().join("afxdp-veth.toml")).unwrap();
    let cases = [
        ("syntax", good.replace("mtu = 1500\n", "mtu = = 1500\n"), "line"),
        ("unknown", good.replace("mtu = 1500\n", "mtu = 1500\nmtu_max = 9000\n"), "mtu_max"),
        ("missing", good.replace("mtu = 1500\n", ""), "mtu"),
    ];
    for (case, text, key) in cases {
        assert_ne!(text, good, "{case}: the test's edit did not apply");
        let path = dir.path().join("afxdp-veth.toml");
        std::fs::write(&path, text).unwrap();
        let output = beeline(&["hw", "check", "--profile", path.to_str().unwrap()]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{case}: {err}");
        assert_eq!(err.lines().count(), 1, "{case}: {err}");
        assert!(err.contains(&path.display().to_string()) && err.contains(key), "{case}: {err}");
        assert!(stdout(&output).is_empty(), "{case}");
    }
    let output = beeline(&["hw", "check", "--profile", "no-such-nic"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-nic") && err.contains("beeline hw list"), "{err}");
}

#[test]
fn afxdp_veth_right_mtu_passes_and_wrong_mtu_fails_with_the_fix() {
    require_root!("afxdp_veth_right_mtu_passes_and_wrong_mtu_fails_with_the_fix");
    let id = unique_id();
    let veth = Veth::new(&format!("bhw{id}a"), &format!("bhw{id}b"));
    let check = || beeline(&["hw", "check", "--profile", "afxdp-veth", "--interface", &veth.name]);

    let output = check();
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    for name in ["interface", "mtu", "queues"] {
        assert_eq!(verdict(line(&out, name)), "ok", "{out}");
    }
    assert!(out.contains(&format!("set interface = \"{}\"", veth.name)), "{out}");

    // Smaller than the profile's: the cluster's 1500-byte frames would not arrive.
    sh(&["ip", "link", "set", "dev", &veth.name, "mtu", "1400"]);
    let output = check();
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let mtu = line(&out, "mtu");
    assert_eq!(verdict(mtu), "FAIL", "{out}");
    assert!(mtu.contains(&format!("fix: ip link set dev {} mtu 1500", veth.name)), "{mtu}");

    // Larger than a 4 KiB frame holds behind the XDP headroom: the node would refuse it.
    sh(&["ip", "link", "set", "dev", &veth.name, "mtu", "9000"]);
    let output = check();
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let mtu = line(&out, "mtu");
    assert!(verdict(mtu) == "FAIL" && mtu.contains("4096-byte frames"), "{mtu}");
    assert!(mtu.contains(&format!("fix: ip link set dev {} mtu 1500", veth.name)), "{mtu}");
}

#[test]
fn afxdp_missing_interface_fails() {
    let output = beeline(&["hw", "check", "--profile", "afxdp-veth", "--interface", "bhw-nonexist"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let interface = line(&out, "interface");
    assert!(verdict(interface) == "FAIL" && interface.contains("bhw-nonexist is missing"), "{interface}");
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// Restores nr_hugepages on drop, unless someone else changed it since we last did.
struct HugepagesGuard {
    old: u64,
    set: Option<u64>,
}

impl HugepagesGuard {
    fn set(&mut self, pages: u64) {
        std::fs::write(NR_HUGEPAGES, pages.to_string()).unwrap();
        self.set = Some(read_number(NR_HUGEPAGES));
    }
}

impl Drop for HugepagesGuard {
    fn drop(&mut self) {
        if self.set.is_some_and(|set| read_number(NR_HUGEPAGES) == set) {
            let _ = std::fs::write(NR_HUGEPAGES, self.old.to_string());
        } else if self.set.is_some() {
            eprintln!("nr_hugepages was changed by someone else during the test; left as it is");
        }
    }
}

#[test]
fn hugepage_verdict_follows_nr_hugepages() {
    require_root!("hugepage_verdict_follows_nr_hugepages");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    if !meminfo.lines().any(|l| l.starts_with("Hugepagesize:") && l.contains(" 2048 kB")) {
        beeline_dataplane::testkit::skip(
            "hugepage_verdict_follows_nr_hugepages",
            "the default hugepage size is not 2 MiB",
        );
        return;
    }
    let needed = 256; // virtio.toml's [hugepages] pages
    let old = read_number(NR_HUGEPAGES);
    let mut guard = HugepagesGuard { old, set: None };
    // Pages free but reserved by other processes' mappings are not free for a node.
    let available = || {
        read_number(&format!("{HUGEPAGES_2M}/free_hugepages"))
            .saturating_sub(read_number(&format!("{HUGEPAGES_2M}/resv_hugepages")))
    };
    let in_use = old - available().min(old);
    let hugepages_line = |profile: &str| {
        let out = stdout(&beeline(&["hw", "check", "--profile", profile]));
        line(&out, "hugepages").to_owned()
    };

    guard.set(in_use + needed);
    let free = available();
    if free < needed {
        beeline_dataplane::testkit::skip(
            "hugepage_verdict_follows_nr_hugepages",
            &format!("the kernel reserved only {free} free pages"),
        );
        return;
    }
    let enough = hugepages_line("virtio");
    assert_eq!(verdict(&enough), "ok", "{enough}");
    assert!(enough.contains(&format!("{free} of ")) && enough.contains(&format!("{needed} needed")), "{enough}");

    // One page short: DPDK cannot start (FAIL); AF_XDP falls back to normal pages (warn).
    guard.set(in_use + needed - 1);
    let short = hugepages_line("virtio");
    assert_eq!(verdict(&short), "FAIL", "{short}");
    assert!(short.contains(&format!("fix: echo {} > {HUGEPAGES_2M}/nr_hugepages", in_use + needed)), "{short}");
    guard.set(in_use);
    let afxdp = hugepages_line("afxdp-veth");
    assert_eq!(verdict(&afxdp), "warn", "{afxdp}");
    assert!(afxdp.contains(&format!("{HUGEPAGES_2M}/nr_hugepages")), "{afxdp}");
}
