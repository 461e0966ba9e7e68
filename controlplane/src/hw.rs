//! Hardware profiles (`hw-configs/*.toml`) and `beeline hw check`: does this host have
//! what a profile's node needs (hugepages, IOMMU and vfio-pci, the device on the right
//! driver, the DPDK PMD, the interface's MTU and queues, the pinned cores), and what to
//! run where it does not.
//!
//! Everything is read from procfs and sysfs directly, through [`Host`], whose roots a test
//! can point at a fake tree. A profile's `[node]` table is validated by the node's own
//! config code, so what `hw check` accepts is what `beeline node run` accepts.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::BackendKind;

mod profile;
pub use profile::*;

/// The filesystem roots `hw check` reads; a fake tree in tests.
#[derive(Debug, Clone)]
pub struct Host {
    /// `/sys`
    pub sys: PathBuf,
    /// `/proc`
    pub proc: PathBuf,
    /// `/lib/firmware`
    pub firmware: PathBuf,
    /// Library roots searched for DPDK's `dpdk/pmds-*` directories and shared libraries,
    /// directly and under `<arch>-linux-gnu/`.
    pub lib_dirs: Vec<PathBuf>,
    /// This machine's architecture, as `std::env::consts::ARCH` names it.
    pub arch: String,
}

impl Host {
    /// The running machine.
    pub fn real() -> Self {
        Self::under(Path::new("/"))
    }

    /// A tree rooted at `root` laid out like a real one.
    pub fn under(root: &Path) -> Self {
        Host {
            sys: root.join("sys"),
            proc: root.join("proc"),
            firmware: root.join("lib/firmware"),
            // DOCA (BlueField) ships its DPDK under /opt/mellanox/dpdk.
            lib_dirs: ["usr/lib", "usr/local/lib", "usr/lib64", "usr/local/lib64", "opt/mellanox/dpdk/lib"]
                .iter()
                .map(|dir| root.join(dir))
                .collect(),
            arch: std::env::consts::ARCH.to_owned(),
        }
    }

    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
    }

    fn read_u64(&self, path: &Path) -> Option<u64> {
        self.read(path)?.parse().ok()
    }

    fn link_name(&self, path: &Path) -> Option<String> {
        std::fs::read_link(path).ok()?.file_name().map(|name| name.to_string_lossy().into_owned())
    }

    /// Library roots plus their `<arch>-linux-gnu` multiarch directories.
    fn lib_roots(&self) -> Vec<PathBuf> {
        let triplet = format!("{}-linux-gnu", self.arch);
        self.lib_dirs.iter().flat_map(|dir| [dir.clone(), dir.join(&triplet)]).collect()
    }

    /// Every `dpdk/pmds-*` directory, newest ABI last.
    fn pmd_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for root in self.lib_roots() {
            let Ok(entries) = std::fs::read_dir(root.join("dpdk")) else { continue };
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| {
                    path.is_dir() && path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pmds-"))
                })
                .collect();
            found.sort();
            dirs.extend(found);
        }
        dirs
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One line of `hw check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub verdict: Verdict,
    pub name: &'static str,
    pub detail: String,
    /// What to run (or change) to make it ok; set for every non-ok verdict.
    pub fix: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {:<12} {}", self.verdict, self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check { verdict: Verdict::Ok, name, detail: detail.into(), fix: None }
}

fn not_ok(verdict: Verdict, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { verdict, name, detail: detail.into(), fix: Some(fix.into()) }
}

/// What `hw check` is pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A PCI address, for dpdk profiles.
    Device(String),
    /// A network interface, for afxdp profiles.
    Interface(String),
}

/// `0000:3b:00.0` from `3b:00.0` or `0000:3b:00.0,devargs`.
pub fn normalize_pci(address: &str) -> String {
    let address = address.split(',').next().unwrap_or("").to_ascii_lowercase();
    if address.matches(':').count() == 1 { format!("0000:{address}") } else { address }
}

fn parse_pci_id(id: &str) -> Option<(u16, u16)> {
    let (vendor, device) = id.split_once(':')?;
    let hex = |s: &str| {
        if s.len() == 4 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
            u16::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(vendor)?, hex(device)?))
}

/// The cores of a list such as `0-3,6`; `None` when it is not one.
pub fn parse_cpu_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut cores = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first.trim().parse::<u32>().ok()?, last.trim().parse::<u32>().ok()?),
            None => {
                let core = part.trim().parse::<u32>().ok()?;
                (core, core)
            }
        };
        // A bound on the range keeps a typo like 0-4000000000 from allocating forever.
        if first > last || last > 65535 {
            return None;
        }
        cores.extend(first..=last);
    }
    Some(cores)
}

fn format_cpu_list(cores: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut iter = cores.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        parts.push(if first == last { first.to_string() } else { format!("{first}-{last}") });
    }
    parts.join(",")
}

fn page_label(kib: u64) -> String {
    if kib >= 1 << 20 { format!("{} GiB", kib >> 20) } else { format!("{} MiB", kib >> 10) }
}

/// The target a profile checks by default: its `[node]` device or interface.
pub fn default_target(profile: &Profile) -> Option<Target> {
    if profile.backend == BackendKind::Dpdk {
        let device = profile.node.get("dpdk_devices")?.as_array()?.first()?.as_str()?;
        crate::config::dpdk::is_pci_address(device).then(|| Target::Device(normalize_pci(device)))
    } else {
        Some(Target::Interface(profile.node.get("interface")?.as_str()?.to_owned()))
    }
}

/// Runs every check of `loaded` against `host`, in the order they are printed.
// Long on purpose: a checklist: one verdict per host property, printed in this order.
pub fn check(host: &Host, loaded: &LoadedProfile, target: Option<&Target>) -> Vec<Check> {
    let profile = &loaded.profile;
    let mut checks = Vec::new();
    if let Some(arch) = &profile.arch {
        checks.push(if *arch == host.arch {
            ok("arch", arch.clone())
        } else {
            not_ok(
                Verdict::Fail,
                "arch",
                format!("this profile is for {arch}, this host is {}", host.arch),
                "run it on the machine it is for, or pick the profile for this one (`beeline hw list`)",
            )
        });
    }
    let device = match target {
        Some(Target::Device(address)) => Some(normalize_pci(address)),
        _ => None,
    };
    let numa_node = device
        .as_ref()
        .and_then(|address| host.read(&host.sys.join("bus/pci/devices").join(address).join("numa_node")))
        .and_then(|text| text.parse::<u32>().ok());
    checks.extend(check_hugepages(host, profile, numa_node));
    if profile.vfio != VfioNeed::NotNeeded {
        checks.push(check_iommu(host, profile.vfio));
        checks.push(check_vfio_driver(host));
    }
    for module in &profile.kernel_modules {
        checks.push(if host.sys.join("module").join(module).exists() {
            ok("module", format!("{module} is loaded"))
        } else {
            not_ok(
                Verdict::Fail,
                "module",
                format!("kernel module {module} is not loaded"),
                format!("modprobe {module}"),
            )
        });
    }
    match target {
        Some(Target::Device(_)) => {
            if let Some(address) = &device {
                checks.extend(check_device(host, profile, address));
            }
        }
        Some(Target::Interface(interface)) => checks.extend(check_interface(host, profile, interface)),
        None => checks.push(not_ok(
            Verdict::Fail,
            "device",
            "no device to check: the profile's [node] names none",
            if profile.backend == BackendKind::Dpdk { "pass --device PCI_ADDRESS" } else { "pass --interface IF" },
        )),
    }
    if let Some(pmd) = &profile.pmd {
        checks.push(check_pmd(host, pmd));
    }
    for (file, package) in &profile.libraries {
        let found = host.lib_roots().into_iter().map(|root| root.join(file)).find(|path| path.exists());
        checks.push(match found {
            Some(path) => ok("library", path.display().to_string()),
            None => not_ok(
                Verdict::Fail,
                "library",
                format!("{file} is not installed (the PMD loads it)"),
                format!("apt-get install {package}"),
            ),
        });
    }
    for (file, package) in &profile.firmware {
        let path = host.firmware.join(file);
        checks.push(if path.exists() {
            ok("firmware", path.display().to_string())
        } else {
            not_ok(
                Verdict::Warn,
                "firmware",
                format!("{} is missing: the NIC runs with reduced features", path.display()),
                format!("apt-get install {package}, then reload the driver or reboot"),
            )
        });
    }
    if let Some(cores) = &profile.dpdk_cores {
        checks.extend(check_cores(host, profile, cores, device.as_deref()));
    }
    checks.push(match validate_node_table(loaded) {
        Ok(_) => ok("node config", "the [node] keys resolve as a node config"),
        Err(message) => not_ok(Verdict::Fail, "node config", message, "fix the [node] table of the profile"),
    });
    // The [node] table names a placeholder; say when the operator must change it.
    if let (Some(target), Some(named)) = (target, default_target(profile).filter(|named| Some(named) != target)) {
        checks.push(not_ok(
            Verdict::Warn,
            "node config",
            format!("checked {} but the profile's [node] names {}", describe(target), describe(&named)),
            match target {
                Target::Device(address) => {
                    // Keep the profile's devargs (mlx5 tuning) on the operator's address.
                    let devargs = profile
                        .node
                        .get("dpdk_devices")
                        .and_then(|v| v.as_array()?.first()?.as_str()?.split_once(',').map(|(_, args)| args.to_owned()))
                        .map(|args| format!(",{args}"))
                        .unwrap_or_default();
                    format!("set dpdk_devices = [\"{address}{devargs}\"] in the node config")
                }
                Target::Interface(interface) => format!("set interface = \"{interface}\" in the node config"),
            },
        ));
    }
    checks
}

fn describe(target: &Target) -> String {
    match target {
        Target::Device(address) => format!("device {address}"),
        Target::Interface(interface) => format!("interface {interface}"),
    }
}

// Long on purpose: one verdict built from the pool sizes, the mounts and the profile, with the fix for each case.
fn check_hugepages(host: &Host, profile: &Profile, numa_node: Option<u32>) -> Vec<Check> {
    let need = &profile.hugepages;
    let Some(kib) = need.page_kib() else { return Vec::new() };
    // AF_XDP falls back to normal pages (`hugepages = "prefer"`); DPDK's EAL does not.
    let short = if profile.backend == BackendKind::Dpdk { Verdict::Fail } else { Verdict::Warn };
    let label = page_label(kib);
    let dir = host.sys.join(format!("kernel/mm/hugepages/hugepages-{kib}kB"));
    let mut checks = Vec::new();
    let (Some(total), Some(free_or_reserved)) =
        (host.read_u64(&dir.join("nr_hugepages")), host.read_u64(&dir.join("free_hugepages")))
    else {
        let size = if kib >= 1 << 20 { "1G" } else { "2M" };
        checks.push(not_ok(
            short,
            "hugepages",
            format!("this kernel offers no {label} pages ({} is missing)", dir.display()),
            format!(
                "add `hugepagesz={size} hugepages={}` to the kernel command line (GRUB_CMDLINE_LINUX in \
                 /etc/default/grub, update-grub, reboot)",
                need.pages
            ),
        ));
        return checks;
    };
    // Pages other processes' mappings have reserved count as free in sysfs but are theirs.
    let free = free_or_reserved.saturating_sub(host.read_u64(&dir.join("resv_hugepages")).unwrap_or(0));
    if free >= need.pages {
        checks.push(ok("hugepages", format!("{free} of {total} {label} pages free, {} needed", need.pages)));
    } else {
        let target = total + (need.pages - free);
        let mut fix = format!(
            "echo {target} > {}",
            Path::new("/sys").join(dir.strip_prefix(&host.sys).unwrap_or(&dir)).join("nr_hugepages").display()
        );
        if kib >= 1 << 20 {
            // 1 GiB pages rarely allocate once memory is fragmented.
            fix.push_str(&format!(
                " (or, reliably, boot with `default_hugepagesz=1G hugepagesz=1G hugepages={target}`)"
            ));
        }
        checks.push(not_ok(
            short,
            "hugepages",
            format!("{free} of {total} {label} pages free, {} needed", need.pages),
            fix,
        ));
    }
    // DPDK allocates a port's memory on the NIC's NUMA node: the pages must be there.
    if let Some(node) = numa_node {
        let node_dir = host.sys.join(format!("devices/system/node/node{node}/hugepages/hugepages-{kib}kB"));
        if let (Some(node_total), Some(node_free)) =
            (host.read_u64(&node_dir.join("nr_hugepages")), host.read_u64(&node_dir.join("free_hugepages")))
        {
            checks.push(if node_free >= need.pages {
                ok("hugepages", format!("NUMA node {node}: {node_free} {label} pages free"))
            } else {
                not_ok(
                    Verdict::Warn,
                    "hugepages",
                    format!("NUMA node {node} (the NIC's) has {node_free} {label} pages free, {} needed", need.pages),
                    format!(
                        "echo {} > /sys/devices/system/node/node{node}/hugepages/hugepages-{kib}kB/nr_hugepages",
                        node_total + (need.pages - node_free)
                    ),
                )
            });
        }
    }
    if profile.backend == BackendKind::Dpdk {
        checks.push(check_hugetlbfs(host, kib));
    }
    checks
}

/// The EAL maps its pages from a hugetlbfs mount of the right page size.
fn check_hugetlbfs(host: &Host, kib: u64) -> Check {
    let default_kib = host.read(&host.proc.join("meminfo")).and_then(|meminfo| {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix("Hugepagesize:")?.trim().strip_suffix("kB")?.trim().parse().ok())
    });
    let mounts = host.read(&host.proc.join("mounts")).unwrap_or_default();
    let found = mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) != Some(&"hugetlbfs") {
            return None;
        }
        let size = fields.get(3)?.split(',').find_map(|option| option.strip_prefix("pagesize=")).map(parse_size_kib);
        let size = match size {
            Some(size) => size,
            None => default_kib,
        };
        (size == Some(kib)).then(|| fields[1].to_owned())
    });
    let size = if kib >= 1 << 20 { "1G" } else { "2M" };
    match found {
        Some(mount_point) => ok("hugetlbfs", format!("{} pages mounted at {mount_point}", page_label(kib))),
        None => {
            let dir = if kib >= 1 << 20 { "/dev/hugepages1G" } else { "/dev/hugepages" };
            not_ok(
                Verdict::Fail,
                "hugetlbfs",
                format!("no hugetlbfs mount with {} pages in /proc/mounts", page_label(kib)),
                format!("mkdir -p {dir} && mount -t hugetlbfs -o pagesize={size} nodev {dir}"),
            )
        }
    }
}

/// `2M`, `1024M`, `1G`, `2048k` as the kernel prints `pagesize=`, in KiB.
fn parse_size_kib(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().ok()?;
    match unit.to_ascii_uppercase().as_str() {
        "K" => Some(number),
        "M" => Some(number << 10),
        "G" => Some(number << 20),
        _ => None,
    }
}

fn check_iommu(host: &Host, need: VfioNeed) -> Check {
    let groups = std::fs::read_dir(host.sys.join("kernel/iommu_groups")).map(|d| d.count()).unwrap_or(0);
    if groups > 0 {
        return ok("iommu", format!("{groups} IOMMU groups"));
    }
    let noiommu_param = host.sys.join("module/vfio/parameters/enable_unsafe_noiommu_mode");
    let noiommu = host.read(&noiommu_param).is_some_and(|value| value == "Y" || value == "1");
    match need {
        VfioNeed::NoIommuOk if noiommu => ok("iommu", "no IOMMU; vfio's unsafe no-IOMMU mode is on (fine in a VM)"),
        VfioNeed::NoIommuOk => not_ok(
            Verdict::Fail,
            "iommu",
            "no IOMMU groups and vfio's no-IOMMU mode is off",
            if noiommu_param.exists() {
                "echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode".to_owned()
            } else {
                "modprobe vfio enable_unsafe_noiommu_mode=1 (or, when vfio is loaded, echo 1 > \
                 /sys/module/vfio/parameters/enable_unsafe_noiommu_mode)"
                    .to_owned()
            },
        ),
        _ => not_ok(
            Verdict::Fail,
            "iommu",
            if noiommu {
                "no IOMMU groups (no-IOMMU mode is on, but this profile needs a real IOMMU)"
            } else {
                "no IOMMU groups: the IOMMU is off"
            },
            "enable VT-d / AMD-Vi in the firmware and add `intel_iommu=on iommu=pt` (Intel) or `amd_iommu=on \
             iommu=pt` (AMD) to the kernel command line, then reboot",
        ),
    }
}

fn check_vfio_driver(host: &Host) -> Check {
    if host.sys.join("bus/pci/drivers/vfio-pci").is_dir() {
        ok("vfio-pci", "the vfio-pci driver is loaded")
    } else {
        not_ok(Verdict::Fail, "vfio-pci", "the vfio-pci driver is not loaded", "modprobe vfio-pci")
    }
}

/// The kernel network interfaces of a PCI device (under `net/`, or `virtioN/net/`).
fn device_interfaces(device_dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut dirs = vec![device_dir.join("net")];
    if let Ok(entries) = std::fs::read_dir(device_dir) {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
                .map(|e| e.path().join("net")),
        );
    }
    for dir in dirs {
        if let Ok(entries) = std::fs::read_dir(dir) {
            names.extend(entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
        }
    }
    names.sort();
    names
}

fn check_device(host: &Host, profile: &Profile, address: &str) -> Vec<Check> {
    let dir = host.sys.join("bus/pci/devices").join(address);
    if !dir.exists() {
        return vec![not_ok(
            Verdict::Fail,
            "device",
            format!("device {address} is missing (no {})", dir.display()),
            "find the NIC's PCI address with `dpdk-devbind.py -s` (or `readlink /sys/class/net/IF/device`) and \
             pass --device ADDRESS",
        )];
    }
    let mut checks = Vec::new();
    let id = |file: &str| host.read(&dir.join(file)).map(|t| t.trim_start_matches("0x").to_owned()).unwrap_or_default();
    let pci_id = format!("{}:{}", id("vendor"), id("device"));
    checks.push(if profile.pci_ids.is_empty() || profile.pci_ids.contains(&pci_id) {
        ok("device", format!("{address} is present ({pci_id})"))
    } else {
        not_ok(
            Verdict::Warn,
            "device",
            format!("{address} is {pci_id}, not one of this profile's NICs ({})", profile.pci_ids.join(", ")),
            "check --device, or pick the profile for this NIC (`beeline hw list`)",
        )
    });
    let driver = host.link_name(&dir.join("driver"));
    let interfaces = device_interfaces(&dir);
    let bound = driver.clone().unwrap_or_else(|| "no driver".into());
    if profile.vfio == VfioNeed::NotNeeded {
        checks.push(match &driver {
            Some(driver) if profile.kernel_drivers.contains(driver) => {
                ok("driver", format!("{address} is bound to {driver} (bifurcated: no vfio-pci binding needed)"))
            }
            _ => not_ok(
                Verdict::Fail,
                "driver",
                format!("{address} is bound to {bound}, expected {}", profile.kernel_drivers.join(" or ")),
                format!("dpdk-devbind.py -b {} {address}", profile.kernel_drivers.first().map_or("", |d| d.as_str())),
            ),
        });
    } else {
        checks.push(match driver.as_deref() {
            Some("vfio-pci") => ok("driver", format!("{address} is bound to vfio-pci")),
            _ => {
                let mut fix = format!("dpdk-devbind.py -b vfio-pci {address}");
                if !interfaces.is_empty() {
                    // Binding takes the interface from the kernel: make sure it is not the
                    // one the operator is logged in through.
                    fix.push_str(&format!(
                        " (this takes {} away from the kernel: `ip link set dev {} down` first, and never bind the \
                         NIC you are logged in through)",
                        interfaces.join(", "),
                        interfaces[0]
                    ));
                }
                not_ok(Verdict::Fail, "driver", format!("{address} is bound to {bound}, DPDK needs vfio-pci"), fix)
            }
        });
    }
    checks
}

fn check_pmd(host: &Host, pmd: &str) -> Check {
    let dirs = host.pmd_dirs();
    for dir in dirs.iter().rev() {
        let found = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|path| {
                path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&format!("{pmd}.so")))
            })
        });
        if let Some(path) = found {
            return ok("pmd", path.display().to_string());
        }
    }
    // Debian names the package after the library and the ABI: librte_net_ice with ABI 23
    // is librte-net-ice23, and a name ending in a digit gets a dash (librte-net-mlx5-23).
    let abi = dirs
        .last()
        .and_then(|dir| dir.file_name()?.to_string_lossy().strip_prefix("pmds-")?.split('.').next().map(str::to_owned))
        .unwrap_or_else(|| "23".into());
    let base = pmd.replace('_', "-");
    let package =
        if base.ends_with(|c: char| c.is_ascii_digit()) { format!("{base}-{abi}") } else { format!("{base}{abi}") };
    if dirs.is_empty() {
        not_ok(
            Verdict::Fail,
            "pmd",
            format!("{pmd}: no DPDK installed (no dpdk/pmds-* directory)"),
            format!("apt-get install dpdk {package}"),
        )
    } else {
        not_ok(
            Verdict::Fail,
            "pmd",
            format!(
                "{pmd}.so is in none of {}",
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            format!("apt-get install {package}"),
        )
    }
}

fn check_cores(host: &Host, profile: &Profile, cores: &str, device: Option<&str>) -> Vec<Check> {
    let Some(wanted) = parse_cpu_list(cores) else {
        return vec![not_ok(
            Verdict::Fail,
            "cores",
            format!("dpdk_cores {cores:?} is not a core list"),
            "use e.g. 1 or 2-3",
        )];
    };
    let online = host
        .read(&host.sys.join("devices/system/cpu/online"))
        .and_then(|text| parse_cpu_list(&text))
        .unwrap_or_default();
    let missing: BTreeSet<u32> = wanted.difference(&online).copied().collect();
    let mut checks = Vec::new();
    if missing.is_empty() {
        checks.push(ok("cores", format!("dpdk_cores {cores} are online (online: {})", format_cpu_list(&online))));
    } else {
        let spare: BTreeSet<u32> = online.iter().copied().filter(|core| *core != 0).take(wanted.len()).collect();
        checks.push(not_ok(
            Verdict::Fail,
            "cores",
            format!(
                "dpdk_cores {cores}: core {} not online (online: {})",
                format_cpu_list(&missing),
                format_cpu_list(&online)
            ),
            if spare.len() == wanted.len() {
                format!("set dpdk_cores = \"{}\" in the node config", format_cpu_list(&spare))
            } else {
                "run on a host with more cores, or set dpdk_cores to online cores".to_owned()
            },
        ));
        return checks;
    }
    if profile.isolcpus {
        let isolated = host
            .read(&host.sys.join("devices/system/cpu/isolated"))
            .and_then(|text| parse_cpu_list(&text))
            .unwrap_or_default();
        checks.push(if wanted.is_subset(&isolated) {
            ok("cores", format!("dpdk_cores {cores} are isolated"))
        } else {
            let list = format_cpu_list(&wanted);
            not_ok(
                Verdict::Warn,
                "cores",
                format!("dpdk_cores {cores} are not isolated: the scheduler puts other work on them"),
                format!(
                    "add `isolcpus={list} nohz_full={list} rcu_nocbs={list}` to the kernel command line \
                     (GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot)"
                ),
            )
        });
    }
    // A core on another NUMA node than the NIC pays a cross-socket hop per packet.
    if let Some(local) = device
        .and_then(|address| host.read(&host.sys.join("bus/pci/devices").join(address).join("local_cpulist")))
        .and_then(|text| parse_cpu_list(&text))
        .filter(|local| !local.is_empty() && !wanted.is_subset(local))
    {
        checks.push(not_ok(
            Verdict::Warn,
            "cores",
            format!("dpdk_cores {cores} are not all local to the NIC (its cores: {})", format_cpu_list(&local)),
            "set dpdk_cores to cores from that list",
        ));
    }
    checks
}

// Long on purpose: a checklist: one verdict per interface property, printed in this order.
fn check_interface(host: &Host, profile: &Profile, interface: &str) -> Vec<Check> {
    let dir = host.sys.join("class/net").join(interface);
    if interface.is_empty() || interface.contains('/') || !dir.exists() {
        return vec![not_ok(
            Verdict::Fail,
            "interface",
            format!("interface {interface} is missing (no {})", dir.display()),
            "create it, or pass --interface IF naming an existing one (`ip -br link`)",
        )];
    }
    let mut checks = Vec::new();
    let driver = host.link_name(&dir.join("device/driver"));
    checks.push(match driver {
        Some(driver) if profile.kernel_drivers.contains(&driver) => ok("interface", format!("{interface}: {driver}")),
        Some(driver) => not_ok(
            Verdict::Warn,
            "interface",
            format!("{interface} is driven by {driver}, this profile is for {}", profile.kernel_drivers.join(", ")),
            "pick the profile for this NIC (`beeline hw list`)",
        ),
        // A virtual interface has no device; a veth's link is its peer's index.
        None => {
            let ifindex = host.read(&dir.join("ifindex"));
            let iflink = host.read(&dir.join("iflink"));
            if profile.kernel_drivers.iter().any(|d| d == "veth") && ifindex.is_some() && ifindex != iflink {
                ok("interface", format!("{interface}: virtual, peer ifindex {}", iflink.unwrap_or_default()))
            } else {
                not_ok(
                    Verdict::Warn,
                    "interface",
                    format!(
                        "{interface} has no device driver this profile expects ({})",
                        profile.kernel_drivers.join(", ")
                    ),
                    "pick the profile for this interface (`beeline hw list`)",
                )
            }
        }
    });
    match host.read_u64(&dir.join("mtu")) {
        Some(mtu) => {
            let frame_bytes = profile.node.get("frame_bytes").and_then(|v| v.as_integer()).unwrap_or(4096);
            // What the afxdp backend itself refuses at start-up: a packet must fit a frame
            // behind the XDP headroom.
            let frame_max = usize::try_from(frame_bytes).unwrap_or(0).saturating_sub(
                beeline_dataplane::io::afxdp::XDP_PACKET_HEADROOM
                    + beeline_dataplane::io::netstack::ETHERNET_LEN
                    + beeline_dataplane::io::netstack::VLAN_LEN,
            );
            checks.push(if mtu == u64::from(profile.mtu) && mtu <= frame_max as u64 {
                ok("mtu", format!("{interface}: {mtu}"))
            } else if mtu > frame_max as u64 && profile.backend == BackendKind::Afxdp {
                not_ok(
                    Verdict::Fail,
                    "mtu",
                    format!("{interface}: {mtu}, but {frame_bytes}-byte frames hold at most {frame_max}"),
                    format!("ip link set dev {interface} mtu {}", profile.mtu.min(frame_max as u32)),
                )
            } else {
                not_ok(
                    Verdict::Fail,
                    "mtu",
                    format!("{interface}: {mtu}, the profile's is {}", profile.mtu),
                    format!("ip link set dev {interface} mtu {}", profile.mtu),
                )
            });
        }
        None => checks.push(not_ok(
            Verdict::Fail,
            "mtu",
            format!("cannot read {}", dir.join("mtu").display()),
            "check the interface",
        )),
    }
    let rx_queues = std::fs::read_dir(dir.join("queues"))
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(0) as u32;
    checks.push(if rx_queues == profile.queues {
        ok("queues", format!("{interface}: {rx_queues} RX queue(s)"))
    } else if rx_queues > profile.queues {
        // Traffic hashed to a queue the node does not serve never reaches it.
        not_ok(
            Verdict::Warn,
            "queues",
            format!("{interface}: {rx_queues} RX queues, the node serves {}", profile.queues),
            format!(
                "ethtool -L {interface} combined {} (or steer the storage port: ethtool -N {interface} flow-type \
                 udp4 dst-port 7777 action 0)",
                profile.queues
            ),
        )
    } else {
        not_ok(
            Verdict::Fail,
            "queues",
            format!("{interface}: {rx_queues} RX queue(s), the profile needs {}", profile.queues),
            format!("ethtool -L {interface} combined {}", profile.queues),
        )
    });
    let state = host.read(&dir.join("operstate")).unwrap_or_default();
    checks.push(if state == "up" || state == "unknown" {
        ok("link", format!("{interface}: {state}"))
    } else {
        not_ok(
            Verdict::Warn,
            "link",
            format!("{interface}: {state}"),
            format!("ip link set dev {interface} up (and its peer, for a veth)"),
        )
    });
    checks
}

/// `beeline hw ...`
#[derive(Debug, clap::Subcommand)]
pub enum HwCommand {
    /// Check this host against a hardware profile: one line per check (ok / warn / FAIL)
    /// with what to run for each non-ok; exit 1 when any FAIL, 2 for a bad profile.
    Check {
        /// A profile name from `beeline hw list`, or the path of a .toml profile.
        #[arg(long)]
        profile: String,
        /// The PCI address of the NIC (dpdk profiles) [default: the profile's dpdk_devices].
        #[arg(long, conflicts_with = "interface")]
        device: Option<String>,
        /// The network interface (afxdp profiles) [default: the profile's interface].
        #[arg(long)]
        interface: Option<String>,
    },
    /// List the hardware profiles and where they are.
    List,
}

/// Runs `beeline hw ...` and says how the process should exit.
pub fn run(command: HwCommand) -> ExitCode {
    let dirs = profile_dirs();
    match command {
        HwCommand::List => {
            let profiles = list_profiles(&dirs);
            if profiles.is_empty() {
                let searched = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
                eprintln!("beeline: no hardware profiles in {searched}; copy hw-configs/ from the source tree there");
                return ExitCode::from(EXIT_BAD_PROFILE);
            }
            for (name, path) in profiles {
                match load_profile(&path) {
                    Ok(loaded) => println!("{name:<16} {:<6} {}", loaded.profile.backend, loaded.profile.description),
                    Err(error) => println!("{name:<16} (bad)   {error}"),
                }
            }
            ExitCode::SUCCESS
        }
        HwCommand::Check { profile, device, interface } => {
            let loaded = match find_profile(&profile, &dirs) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("beeline: {error}");
                    return ExitCode::from(EXIT_BAD_PROFILE);
                }
            };
            let target = match (device, interface) {
                (Some(device), _) if !crate::config::dpdk::is_pci_address(&device) => {
                    eprintln!(
                        "beeline: --device {device} is not a PCI address; use DOMAIN:BUS:DEVICE.FUNCTION, e.g. \
                         0000:00:06.0"
                    );
                    return ExitCode::from(EXIT_BAD_PROFILE);
                }
                (Some(device), _) => Some(Target::Device(normalize_pci(&device))),
                (_, Some(interface)) => Some(Target::Interface(interface)),
                _ => default_target(&loaded.profile),
            };
            println!(
                "profile {} ({}): backend {}, {}",
                loaded.profile.name,
                loaded.path.display(),
                loaded.profile.backend,
                target.as_ref().map(describe).unwrap_or_else(|| "no device".into())
            );
            let checks = check(&Host::real(), &loaded, target.as_ref());
            for check in &checks {
                println!("{check}");
            }
            let count = |verdict| checks.iter().filter(|c| c.verdict == verdict).count();
            let failed = count(Verdict::Fail);
            println!(
                "summary: {} ok, {} warn, {failed} FAIL: {}",
                count(Verdict::Ok),
                count(Verdict::Warn),
                if failed > 0 {
                    "a node with this profile would not start here; fix the FAIL lines"
                } else {
                    "a node with this profile can start here"
                }
            );
            if failed > 0 { ExitCode::from(EXIT_FAIL) } else { ExitCode::SUCCESS }
        }
    }
}

#[cfg(test)]
mod tests;
