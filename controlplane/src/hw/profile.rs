//! Hardware profiles: the `hw-configs/*.toml` files, where they are looked for, and their
//! `[node]` table checked by the node's own config code.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{parse_cpu_list, parse_pci_id};
use crate::config::{BackendKind, NodeFlags};

/// Where `--profile NAME` is looked for, after `./hw-configs`.
pub const ETC_PROFILE_DIR: &str = "/etc/beeline/hw-configs";
/// The source tree's profiles, for a binary run from (or built in) a checkout.
pub const SOURCE_PROFILE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hw-configs");

/// Exit code of `hw check` when a check failed (the node would not start).
pub const EXIT_FAIL: u8 = 1;
/// Exit code of `hw` when the profile itself is missing or bad.
pub const EXIT_BAD_PROFILE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no hardware profile `{name}` in {searched}; run `beeline hw list`, or pass the path of a .toml file")]
    NotFound { name: String, searched: String },
    #[error("cannot read profile {path}: {reason}; check the path given to --profile")]
    Read { path: PathBuf, reason: String },
    #[error("bad profile {path}{line}: {reason}; fix that key (see hw-configs/README.md)")]
    Syntax { path: PathBuf, line: String, reason: String },
    #[error("bad profile {path}: key `{key}` = {value}: {fix}")]
    Value { path: PathBuf, key: String, value: String, fix: String },
}

/// How a profile's device reaches DPDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VfioNeed {
    /// Bound to vfio-pci behind a real IOMMU (bare metal).
    Required,
    /// Bound to vfio-pci; vfio's unsafe no-IOMMU mode will do (a VM without a vIOMMU).
    NoIommuOk,
    /// No vfio at all: mlx5's bifurcated driver, or the kernel's own (AF_XDP).
    NotNeeded,
}

/// The hugepages a node on this profile needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HugepageNeed {
    /// `2M` or `1G`.
    pub page_size: String,
    pub pages: u64,
}

/// One `hw-configs/*.toml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// `dpdk` or `afxdp`.
    pub backend: BackendKind,
    /// The machine the profile is for (`x86_64`, `aarch64`), when it is one in particular.
    #[serde(default)]
    pub arch: Option<String>,
    /// The kernel driver(s) of the device: what it is bound to before vfio-pci takes it,
    /// or all along when vfio is not needed.
    pub kernel_drivers: Vec<String>,
    /// `vendor:device` IDs of the NIC, lower-case hex.
    #[serde(default)]
    pub pci_ids: Vec<String>,
    pub vfio: VfioNeed,
    /// The DPDK PMD library's base name, e.g. `librte_net_ice`.
    #[serde(default)]
    pub pmd: Option<String>,
    /// Kernel modules that must be loaded (as `/sys/module/NAME`).
    #[serde(default)]
    pub kernel_modules: Vec<String>,
    /// Shared libraries the PMD loads, file name → the Debian package that has it.
    #[serde(default)]
    pub libraries: BTreeMap<String, String>,
    /// Firmware files under /lib/firmware, path → the Debian package that has it.
    #[serde(default)]
    pub firmware: BTreeMap<String, String>,
    #[serde(default)]
    pub eal_args: Vec<String>,
    pub queues: u32,
    pub rx_ring_size: u32,
    pub tx_ring_size: u32,
    pub mtu: u32,
    /// The EAL's `-l` core list.
    #[serde(default)]
    pub dpdk_cores: Option<String>,
    /// The pinned cores should be isolated from the scheduler (`isolcpus=`).
    #[serde(default)]
    pub isolcpus: bool,
    pub hugepages: HugepageNeed,
    /// Node config keys, to copy into the node's TOML file.
    pub node: toml::Table,
}

/// A profile and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub path: PathBuf,
    pub profile: Profile,
}

impl HugepageNeed {
    /// The page size in KiB, as the kernel names its `hugepages-<N>kB` directories.
    pub fn page_kib(&self) -> Option<u64> {
        match self.page_size.as_str() {
            "2M" => Some(2048),
            "1G" => Some(1 << 20),
            _ => None,
        }
    }
}

/// Reads and checks one profile file (everything but its `[node]` keys, which are a
/// check of their own).
// Long on purpose: a checklist of profile fields, one refusal each, in file order.
pub fn load_profile(path: &Path) -> Result<LoadedProfile, ProfileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ProfileError::Read { path: path.to_owned(), reason: error.to_string() })?;
    let profile: Profile = toml::from_str(&text).map_err(|error| {
        let line = error
            .span()
            .map(|span| format!(" line {}", text[..span.start.min(text.len())].matches('\n').count() + 1))
            .unwrap_or_default();
        ProfileError::Syntax { path: path.to_owned(), line, reason: error.message().replace('\n', " ") }
    })?;
    let bad = |key: &str, value: &dyn fmt::Display, fix: &str| ProfileError::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        value: value.to_string(),
        fix: fix.to_owned(),
    };
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if profile.name != stem {
        return Err(bad("name", &profile.name, &format!("must be the file's name without .toml, {stem:?}")));
    }
    if profile.backend == BackendKind::Udp {
        return Err(bad("backend", &profile.backend, "use dpdk or afxdp"));
    }
    if profile.hugepages.page_kib().is_none() {
        return Err(bad("hugepages.page_size", &profile.hugepages.page_size, "use \"2M\" or \"1G\""));
    }
    if profile.hugepages.pages == 0 {
        return Err(bad("hugepages.pages", &0, "must be at least 1"));
    }
    if profile.backend == BackendKind::Dpdk {
        if profile.pmd.is_none() {
            return Err(bad("pmd", &"(none)", "a dpdk profile names its PMD library, e.g. pmd = \"librte_net_ice\""));
        }
        if profile.dpdk_cores.is_none() {
            return Err(bad("dpdk_cores", &"(none)", "a dpdk profile pins its data-plane thread, e.g. \"1\""));
        }
    } else if profile.vfio != VfioNeed::NotNeeded {
        return Err(bad("vfio", &"(set)", "an afxdp profile uses the kernel's driver: use vfio = \"not-needed\""));
    }
    for id in &profile.pci_ids {
        if parse_pci_id(id).is_none() {
            return Err(bad("pci_ids", id, "use vendor:device in lower-case hex, e.g. \"8086:1592\""));
        }
    }
    if let Some(cores) = profile.dpdk_cores.as_ref().filter(|cores| parse_cpu_list(cores).is_none()) {
        return Err(bad("dpdk_cores", cores, "use a core list such as 1, 2-3 or 1,3"));
    }
    // The top-level values are what `hw check` checks the host against; the [node] table
    // is what the operator copies. Where both name a setting they must agree.
    let node_backend = profile.node.get("backend").and_then(|v| v.as_str()).unwrap_or("udp");
    if node_backend != profile.backend.name() {
        return Err(bad(
            "node.backend",
            &node_backend,
            &format!("must be \"{}\", the profile's backend", profile.backend),
        ));
    }
    let mut same: Vec<(&str, toml::Value)> = vec![("queues", toml::Value::Integer(profile.queues.into()))];
    if profile.backend == BackendKind::Dpdk {
        same.extend([
            ("rx_ring_size", toml::Value::Integer(profile.rx_ring_size.into())),
            ("tx_ring_size", toml::Value::Integer(profile.tx_ring_size.into())),
            ("mtu", toml::Value::Integer(profile.mtu.into())),
            ("dpdk_eal_args", toml::Value::Array(profile.eal_args.iter().cloned().map(toml::Value::String).collect())),
        ]);
        if let Some(cores) = &profile.dpdk_cores {
            same.push(("dpdk_cores", toml::Value::String(cores.clone())));
        }
    }
    for (key, value) in same {
        if let Some(given) = profile.node.get(key).filter(|given| **given != value) {
            return Err(bad(
                &format!("node.{key}"),
                given,
                &format!("must equal the profile's own value {value} (or be left out of [node])"),
            ));
        }
    }
    Ok(LoadedProfile { path: path.to_owned(), profile })
}

/// The directories `--profile NAME` and `hw list` look in, in order.
pub fn profile_dirs() -> Vec<PathBuf> {
    // Canonical, so messages show /path/to/beeline/hw-configs rather than controlplane/../.
    let source = std::fs::canonicalize(SOURCE_PROFILE_DIR).unwrap_or_else(|_| PathBuf::from(SOURCE_PROFILE_DIR));
    vec![PathBuf::from("hw-configs"), PathBuf::from(ETC_PROFILE_DIR), source]
}

/// A profile by name (first match in `dirs`) or by path (anything with a `/` or `.toml`).
pub fn find_profile(name_or_path: &str, dirs: &[PathBuf]) -> Result<LoadedProfile, ProfileError> {
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return load_profile(Path::new(name_or_path));
    }
    for dir in dirs {
        let path = dir.join(format!("{name_or_path}.toml"));
        if path.is_file() {
            return load_profile(&path);
        }
    }
    let searched = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    Err(ProfileError::NotFound { name: name_or_path.to_owned(), searched })
}

/// Every `*.toml` in `dirs` by profile name; the first directory that has a name wins.
pub fn list_profiles(dirs: &[PathBuf]) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some(stem) = path.file_stem().filter(|_| path.extension().is_some_and(|e| e == "toml")) {
                found.entry(stem.to_string_lossy().into_owned()).or_insert(path.clone());
            }
        }
    }
    found
}

/// The profile's `[node]` table run through the node's own config resolution, so it is
/// accepted exactly when `beeline node run --config` would accept it.
pub fn validate_node_table(loaded: &LoadedProfile) -> Result<crate::config::NodeSettings, String> {
    let text = toml::to_string(&loaded.profile.node).map_err(|e| format!("cannot serialize [node]: {e}"))?;
    // `resolve` reads a file: a private temporary one, created exclusively under a random
    // name, since a predictable name in /tmp let anyone plant a link that root then wrote
    // through.
    let destination = std::env::temp_dir().join(format!("beeline-hw-{}.toml", loaded.profile.name));
    let cannot =
        |e: std::io::Error| format!("cannot write a temporary file in {}: {e}", std::env::temp_dir().display());
    let (mut file, temp) = crate::output::create_temp(&destination).map_err(cannot)?;
    file.write_all(text.as_bytes()).map_err(cannot)?;
    drop(file);
    let result = NodeFlags { config: Some(temp.path().to_owned()), ..NodeFlags::default() }.resolve();
    let shown = temp.path().display().to_string();
    drop(temp);
    result.map_err(|error| error.to_string().replace(&shown, &format!("{} [node]", loaded.path.display())))
}
