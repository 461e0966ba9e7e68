use super::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn source_profiles() -> BTreeMap<String, PathBuf> {
    let profiles = list_profiles(&[PathBuf::from(SOURCE_PROFILE_DIR)]);
    assert!(profiles.len() >= 6, "expected the six shipped profiles in {SOURCE_PROFILE_DIR}: {profiles:?}");
    profiles
}

fn loaded(name: &str) -> LoadedProfile {
    find_profile(name, &[PathBuf::from(SOURCE_PROFILE_DIR)]).unwrap()
}

/// Every profile in hw-configs/ (a new one included) loads and its [node] resolves.
#[test]
fn every_profile_parses_and_its_node_table_validates() {
    for (name, path) in source_profiles() {
        let loaded = load_profile(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let settings = validate_node_table(&loaded).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(settings.backend.kind(), loaded.profile.backend, "{name}");
        let profile = &loaded.profile;
        if let Some(dpdk) = settings.backend.dpdk() {
            assert_eq!(dpdk.queues, profile.queues, "{name}");
            assert_eq!(u32::from(dpdk.mtu), profile.mtu, "{name}");
            assert_eq!(u32::from(dpdk.rx_ring_size), profile.rx_ring_size, "{name}");
            assert_eq!(Some(&dpdk.cores), profile.dpdk_cores.as_ref(), "{name}");
            // A frame must hold a whole packet at the profile's MTU.
            assert!(settings.frame_bytes as usize >= profile.mtu as usize + 128 + 18, "{name}: frame_bytes");
        }
        // The hugepages reserved must at least hold the arena.
        let arena = u64::from(settings.arena_frames) * u64::from(settings.frame_bytes);
        let reserved = profile.hugepages.pages * profile.hugepages.page_kib().unwrap() * 1024;
        assert!(reserved >= arena, "{name}: {reserved} bytes of hugepages for a {arena}-byte arena");
        assert!(default_target(profile).is_some(), "{name}: [node] names no device or interface");
    }
}

#[test]
fn broken_profiles_give_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(loaded("virtio").path).unwrap();
    let cases = [
        ("virtio", text.replace("isolcpus = false", "isolcpu = false"), "isolcpu"),
        ("virtio", text.replace("vfio = \"no-iommu-ok\"", "vfio = \"maybe\""), "maybe"),
        ("virtio", text.replace("page_size = \"2M\"", "page_size = \"4M\""), "hugepages.page_size"),
        ("virtio", text.replace("mtu = 1500\nhugepages", "mtu = 9000\nhugepages"), "node.mtu"),
        ("other", text.clone(), "`name`"),
        ("virtio", text.replace("[node]\nbackend = \"dpdk\"", "[node]\nbackend = \"udp\""), "node.backend"),
    ];
    for (file, text, key) in cases {
        let path = dir.path().join(format!("{file}.toml"));
        std::fs::write(&path, text).unwrap();
        let message = load_profile(&path).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()) && message.contains(key), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
    // A [node] key the node config does not know is a FAIL line naming it.
    let path = dir.path().join("virtio.toml");
    std::fs::write(&path, text.replace("arena_frames = 16384", "arena_frames = 16384\nbogus_key = 1")).unwrap();
    let loaded = load_profile(&path).unwrap();
    let message = validate_node_table(&loaded).unwrap_err();
    assert!(message.contains("bogus_key") && message.contains("[node]"), "{message}");
    assert!(!message.contains("beeline-hw-"), "the temporary file leaked into: {message}");
}

#[test]
fn cpu_lists_round_trip() {
    assert_eq!(parse_cpu_list("0-3,6\n").unwrap(), BTreeSet::from([0, 1, 2, 3, 6]));
    assert_eq!(format_cpu_list(&parse_cpu_list("0-3,6,7").unwrap()), "0-3,6-7");
    assert!(parse_cpu_list("3-1").is_none() && parse_cpu_list("a").is_none());
    assert_eq!(normalize_pci("3B:00.1,rxq_cqe_comp_en=1"), "0000:3b:00.1");
    assert_eq!(parse_size_kib("1024M"), Some(1 << 20));
}

/// A fake sysfs/procfs tree with one virtio NIC.
struct Fake {
    _dir: tempfile::TempDir,
    host: Host,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::under(dir.path());
        let fake = Fake { _dir: dir, host };
        fake.write("sys/devices/system/cpu/online", "0-3");
        fake.write("sys/devices/system/cpu/isolated", "");
        fake.write("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0");
        fake.write("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "0");
        fake.write("proc/meminfo", "MemTotal: 1 kB\nHugepagesize:       2048 kB\n");
        fake.write("proc/mounts", "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n");
        fake.write("sys/bus/pci/devices/0000:00:06.0/vendor", "0x1af4");
        fake.write("sys/bus/pci/devices/0000:00:06.0/device", "0x1041");
        fake.write("sys/bus/pci/devices/0000:00:06.0/numa_node", "-1");
        fake.write("sys/bus/pci/devices/0000:00:06.0/virtio3/net/eth1/mtu", "1500");
        fake.bind("0000:00:06.0", "virtio-pci");
        fake.write("usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_virtio.so.23", "");
        fake.write(&format!("usr/lib/{}-linux-gnu/dpdk/pmds-23.0/librte_net_virtio.so.23", fake.host.arch), "");
        fake
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.host.sys.parent().unwrap().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn bind(&self, address: &str, driver: &str) {
        let driver_dir = self.path(&format!("sys/bus/pci/drivers/{driver}"));
        std::fs::create_dir_all(&driver_dir).unwrap();
        let link = self.path(&format!("sys/bus/pci/devices/{address}/driver"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(driver_dir, link).unwrap();
    }

    fn check(&self, profile: &str) -> Vec<Check> {
        let loaded = loaded(profile);
        let target = default_target(&loaded.profile);
        check(&self.host, &loaded, target.as_ref())
    }
}

fn line<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} line in {checks:#?}"))
}

#[test]
fn fake_virtio_vm_goes_from_fail_to_ok_as_it_is_fixed() {
    let fake = Fake::new();
    let checks = fake.check("virtio");
    let hugepages = line(&checks, "hugepages");
    assert_eq!(hugepages.verdict, Verdict::Fail);
    assert_eq!(hugepages.fix.as_deref(), Some("echo 256 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"));
    let iommu = line(&checks, "iommu");
    assert_eq!(iommu.verdict, Verdict::Fail);
    assert!(iommu.fix.as_deref().unwrap().contains("enable_unsafe_noiommu_mode"), "{iommu}");
    assert_eq!(line(&checks, "vfio-pci").fix.as_deref(), Some("modprobe vfio-pci"));
    let driver = line(&checks, "driver");
    assert_eq!(driver.verdict, Verdict::Fail);
    assert!(driver.fix.as_deref().unwrap().starts_with("dpdk-devbind.py -b vfio-pci 0000:00:06.0"), "{driver}");
    assert!(driver.fix.as_deref().unwrap().contains("eth1"), "{driver}");
    assert!(checks.iter().all(|c| (c.verdict == Verdict::Ok) == c.fix.is_none()), "{checks:#?}");

    fake.write("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "256");
    fake.write("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "256");
    fake.write("sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "Y");
    fake.bind("0000:00:06.0", "vfio-pci");
    let checks = fake.check("virtio");
    assert!(checks.iter().all(|c| c.verdict == Verdict::Ok), "{checks:#?}");
    // Free pages that other processes have reserved are not free for this node.
    fake.write("sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages", "250");
    let checks = fake.check("virtio");
    let hugepages = line(&checks, "hugepages");
    assert_eq!(hugepages.verdict, Verdict::Fail, "{hugepages}");
    assert!(hugepages.detail.starts_with("6 of 256 "), "{hugepages}");
    fake.write("sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages", "0");

    // no-IOMMU mode is not enough for a profile that needs a real IOMMU.
    assert_eq!(check_iommu(&fake.host, VfioNeed::Required).verdict, Verdict::Fail);
    fake.write("sys/kernel/iommu_groups/0/type", "DMA");
    assert_eq!(check_iommu(&fake.host, VfioNeed::Required).verdict, Verdict::Ok);
}

#[test]
fn fake_host_reports_missing_pmd_mount_cores_and_device() {
    let fake = Fake::new();
    fake.write("proc/mounts", "proc /proc proc rw 0 0\n");
    std::fs::remove_dir_all(fake.path("usr/lib")).unwrap();
    fake.write("sys/devices/system/cpu/online", "0");
    let checks = fake.check("virtio");
    assert_eq!(line(&checks, "hugetlbfs").verdict, Verdict::Fail);
    let pmd = line(&checks, "pmd");
    assert_eq!(pmd.verdict, Verdict::Fail);
    assert!(pmd.fix.as_deref().unwrap().contains("librte-net-virtio23"), "{pmd}");
    // virtio pins core 0, which a host always has; e810 pins core 2.
    assert_eq!(line(&checks, "cores").verdict, Verdict::Ok);

    let checks = fake.check("e810");
    assert_eq!(line(&checks, "cores").verdict, Verdict::Fail);
    let device = line(&checks, "device");
    assert!(device.verdict == Verdict::Fail && device.detail.contains("missing"), "{device}");
    assert_eq!(line(&checks, "firmware").verdict, Verdict::Warn);

    let checks = fake.check("connectx6");
    assert!(checks.iter().any(|c| c.fix.as_deref() == Some("modprobe mlx5_ib")), "{checks:#?}");
}

#[test]
fn fake_interface_mtu_and_queues() {
    let fake = Fake::new();
    fake.write("sys/class/net/veth-bee0/mtu", "9000");
    fake.write("sys/class/net/veth-bee0/ifindex", "7");
    fake.write("sys/class/net/veth-bee0/iflink", "8");
    fake.write("sys/class/net/veth-bee0/operstate", "up");
    fake.write("sys/class/net/veth-bee0/queues/rx-0/rps_cpus", "0");
    fake.write("sys/class/net/veth-bee0/queues/rx-1/rps_cpus", "0");
    let checks = fake.check("afxdp-veth");
    assert_eq!(line(&checks, "interface").verdict, Verdict::Ok);
    let mtu = line(&checks, "mtu");
    assert_eq!((mtu.verdict, mtu.fix.as_deref()), (Verdict::Fail, Some("ip link set dev veth-bee0 mtu 1500")));
    assert_eq!(line(&checks, "queues").verdict, Verdict::Warn);
    // Hugepages are only preferred by afxdp.
    assert_eq!(line(&checks, "hugepages").verdict, Verdict::Warn);
}
