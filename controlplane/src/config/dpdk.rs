//! The `dpdk` keys of the node configuration, validated whether or not this binary was
//! built with the `dpdk` feature (so a config can be checked on any host, and `beeline hw
//! check` can validate a profile's node keys).

use crate::config::{BackendKind, FileConfig, NodeFlags};

/// Largest RX/TX ring a port is given; PMDs cap lower on their own.
pub const RING_SIZE_MAX: u16 = 16384;
/// RSS queues one node may poll.
pub const QUEUES_MAX: u32 = 16;

/// The `dpdk` backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkSettings {
    /// The devices given to the EAL; the first one is the port the node serves.
    pub devices: Vec<String>,
    /// The EAL's `-l` core list.
    pub cores: String,
    /// The EAL's `--file-prefix`: hugepage files and `/var/run/dpdk/<prefix>`.
    pub file_prefix: String,
    /// Any further EAL arguments, passed as they are.
    pub eal_args: Vec<String>,
    pub rx_ring_size: u16,
    pub tx_ring_size: u16,
    pub mtu: u16,
    /// RSS queues, all polled by the one data-plane thread.
    pub queues: u32,
}

/// A rejected key: `(key, value, fix, came_from_a_flag)`.
pub type SettingError = (&'static str, String, String, bool);

/// True for a device the EAL gets with `-a`: a PCI address such as `0000:00:06.0` or
/// `00:06.0`, or an auxiliary device (`auxiliary:mlx5_core.sf.2`, a BlueField scalable
/// function); anything else is a virtual device (`--vdev`).
pub fn is_pci_address(device: &str) -> bool {
    if device.starts_with("auxiliary:") {
        return true;
    }
    let address = device.split(',').next().unwrap_or("");
    let parts: Vec<&str> = address.split([':', '.']).collect();
    let hex = |part: &str, len: usize| part.len() == len && part.chars().all(|c| c.is_ascii_hexdigit());
    match parts.as_slice() {
        [domain, bus, dev, func] => hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && hex(func, 1),
        [bus, dev, func] => hex(bus, 2) && hex(dev, 2) && hex(func, 1),
        _ => false,
    }
}

/// Validates the `dpdk` keys; `Ok(None)` for other backends.
pub fn resolve(
    backend: BackendKind,
    flags: &NodeFlags,
    file: &FileConfig,
    listen_port: u16,
) -> Result<Option<DpdkSettings>, SettingError> {
    if backend != BackendKind::Dpdk {
        return Ok(None);
    }
    let devices = resolve_devices(flags, file)?;
    let from_flag = flags.dpdk_cores.is_some();
    let cores = flags.dpdk_cores.clone().or(file.dpdk_cores.clone()).unwrap_or_else(|| "0".into());
    if cores.is_empty() || !cores.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-') {
        return Err(("dpdk_cores", cores, "use a core list such as 1, 2-3 or 1,3".into(), from_flag));
    }
    let from_flag = flags.dpdk_file_prefix.is_some();
    let file_prefix = flags
        .dpdk_file_prefix
        .clone()
        .or(file.dpdk_file_prefix.clone())
        .unwrap_or_else(|| format!("beeline-{listen_port}"));
    if file_prefix.is_empty() || !file_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(("dpdk_file_prefix", file_prefix, "use letters, digits, - and _ only".into(), from_flag));
    }
    let eal_args = resolve_eal_args(flags, file)?;
    let ring = |key: &'static str, flag: Option<u16>, file: Option<u16>| {
        let size = flag.or(file).unwrap_or(1024);
        if !size.is_power_of_two() || !(64..=RING_SIZE_MAX).contains(&size) {
            return Err((
                key,
                size.to_string(),
                format!("must be a power of two from 64 to {RING_SIZE_MAX}"),
                flag.is_some(),
            ));
        }
        Ok(size)
    };
    let rx_ring_size = ring("rx_ring_size", flags.rx_ring_size, file.rx_ring_size)?;
    let tx_ring_size = ring("tx_ring_size", flags.tx_ring_size, file.tx_ring_size)?;
    let mtu = flags.mtu.or(file.mtu).unwrap_or(1500);
    if !(576..=9000).contains(&mtu) {
        return Err(("mtu", mtu.to_string(), "must be from 576 to 9000".into(), flags.mtu.is_some()));
    }
    let queues = flags.queues.or(file.queues).unwrap_or(1);
    if !(1..=QUEUES_MAX).contains(&queues) {
        return Err(("queues", queues.to_string(), format!("must be from 1 to {QUEUES_MAX}"), flags.queues.is_some()));
    }
    Ok(Some(DpdkSettings { devices, cores, file_prefix, eal_args, rx_ring_size, tx_ring_size, mtu, queues }))
}

/// The devices the EAL gets, the served port first.
fn resolve_devices(flags: &NodeFlags, file: &FileConfig) -> Result<Vec<String>, SettingError> {
    let (devices, from_flag) = match (&flags.dpdk_devices, &file.dpdk_devices) {
        (flag, _) if !flag.is_empty() => (flag.clone(), true),
        (_, Some(file)) => (file.clone(), false),
        _ => (Vec::new(), false),
    };
    if devices.is_empty() {
        return Err((
            "dpdk_devices",
            "(none)".into(),
            "backend = \"dpdk\" needs the port to serve: a PCI address bound to vfio-pci, e.g. \
             dpdk_devices = [\"0000:00:06.0\"], or a virtual device such as \"net_af_xdp0,iface=eth1\""
                .into(),
            from_flag,
        ));
    }
    for device in &devices {
        let name = device.split(',').next().unwrap_or("");
        if !is_pci_address(device) && !name.starts_with("net_") {
            return Err((
                "dpdk_devices",
                device.clone(),
                "use a PCI address (0000:00:06.0), an auxiliary device (auxiliary:mlx5_core.sf.2) or a DPDK \
                 virtual device whose name starts with net_"
                    .into(),
                from_flag,
            ));
        }
    }
    Ok(devices)
}

/// Extra EAL arguments, refusing those another key owns.
fn resolve_eal_args(flags: &NodeFlags, file: &FileConfig) -> Result<Vec<String>, SettingError> {
    let eal_args = if flags.dpdk_eal_args.is_empty() {
        file.dpdk_eal_args.clone().unwrap_or_default()
    } else {
        flags.dpdk_eal_args.clone()
    };
    for (arg, owned_by) in [
        ("-l", "dpdk_cores"),
        ("--file-prefix", "dpdk_file_prefix"),
        ("--vdev", "dpdk_devices"),
        ("-a", "dpdk_devices"),
    ] {
        if eal_args.iter().any(|given| given == arg || given.starts_with(&format!("{arg}="))) {
            return Err((
                "dpdk_eal_args",
                arg.into(),
                format!("set {owned_by} instead of passing {arg} in dpdk_eal_args"),
                !flags.dpdk_eal_args.is_empty(),
            ));
        }
    }
    Ok(eal_args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_and_virtual_devices_are_told_apart() {
        assert!(is_pci_address("0000:00:06.0"));
        assert!(is_pci_address("3b:00.1"));
        assert!(is_pci_address("0000:3b:00.1,rxq_cqe_comp_en=0"));
        assert!(!is_pci_address("net_af_xdp0,iface=veth0"));
        assert!(!is_pci_address("0000:00:6.0"));
        assert!(is_pci_address("auxiliary:mlx5_core.sf.2"));
    }

    #[test]
    fn dpdk_keys_are_validated_with_a_fix() {
        let file = FileConfig {
            dpdk_devices: Some(vec!["net_virtio_user0,path=/tmp/vhost.sock".into()]),
            ..FileConfig::default()
        };
        let settings = resolve(BackendKind::Dpdk, &NodeFlags::default(), &file, 7777).unwrap().unwrap();
        assert_eq!(settings.file_prefix, "beeline-7777");
        assert_eq!((settings.rx_ring_size, settings.mtu, settings.queues), (1024, 1500, 1));

        let error = resolve(BackendKind::Dpdk, &NodeFlags::default(), &FileConfig::default(), 1).unwrap_err();
        assert_eq!(error.0, "dpdk_devices");
        let bad = FileConfig { rx_ring_size: Some(1000), ..file.clone() };
        assert_eq!(resolve(BackendKind::Dpdk, &NodeFlags::default(), &bad, 1).unwrap_err().0, "rx_ring_size");
        let bad = FileConfig { dpdk_eal_args: Some(vec!["--file-prefix=x".into()]), ..file.clone() };
        assert!(resolve(BackendKind::Dpdk, &NodeFlags::default(), &bad, 1).unwrap_err().2.contains("dpdk_file_prefix"));
        let bad = FileConfig { dpdk_devices: Some(vec!["eth1".into()]), ..file };
        assert_eq!(resolve(BackendKind::Dpdk, &NodeFlags::default(), &bad, 1).unwrap_err().0, "dpdk_devices");
        assert!(resolve(BackendKind::Udp, &NodeFlags::default(), &FileConfig::default(), 1).unwrap().is_none());
    }
}
