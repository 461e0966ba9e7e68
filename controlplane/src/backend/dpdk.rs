//! The `dpdk` backend around the data plane's DPDK port: the EAL arguments built from the
//! node config, the EAL and the mbuf pool that is the arena ([`DpdkRuntime`]), and for
//! `net_af_xdp` ports the XDP classifier handed to the PMD as its program.
//!
//! Start-up, in order: the EAL starts (`-l`, `--file-prefix`, the devices, hugepages or
//! not), the pool is laid out one mbuf per arena frame, the first port is configured and
//! started over it. A `net_af_xdp` device gets `xdp_prog=` pointing at Beeline's classifier
//! (written next to the data), so ARP, SSH and everything else still reach the kernel; the
//! PMD loads and attaches it, and the node then sets the classifier's storage port and
//! allowlist in place.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use beeline_dataplane::arena::Arena;
use beeline_dataplane::io::dpdk::{DpdkConfig, DpdkError, DpdkIo, DpdkMemory, Eal, PoolLayout};
use beeline_xdp::AdoptedClassifier;
use tracing::{info, warn};

use crate::backend::BackendError;
use crate::config::dpdk::{DpdkSettings, is_pci_address};
use crate::config::{HugepagePolicy, NodeSettings};

/// The EAL's argument list for a node (without the program name).
pub fn eal_args(
    settings: &DpdkSettings,
    hugepages: HugepagePolicy,
    arena_bytes: u64,
    xdp_program: Option<&Path>,
) -> Vec<String> {
    let mut args =
        vec!["-l".to_owned(), settings.cores.clone(), "--file-prefix".to_owned(), settings.file_prefix.clone()];
    let use_hugepages = match hugepages {
        HugepagePolicy::Off => false,
        HugepagePolicy::Require => true,
        HugepagePolicy::Prefer => {
            let free = beeline_dataplane::io::dpdk::available_hugepages();
            if free == 0 {
                warn!("no free hugepages: DPDK runs on normal pages (hugepages = \"prefer\"); reserve some for speed");
            }
            free > 0
        }
    };
    if use_hugepages {
        // Keep the EAL's files in memory: a killed node leaves no hugepage files or
        // runtime directory behind, and two nodes never share state. One file per memseg
        // list: vhost-user peers (virtio_user) map the memory by fd.
        args.push("--in-memory".to_owned());
        args.push("--single-file-segments".to_owned());
    } else {
        // Without hugepages the EAL preallocates `-m` MiB (the arena plus DPDK's own needs)
        // in legacy mode, which --in-memory refuses; --no-shconf keeps its runtime files
        // out of /var/run instead.
        args.push("--no-huge".to_owned());
        args.push("--no-shconf".to_owned());
        args.push("-m".to_owned());
        args.push((arena_bytes.div_ceil(1 << 20) + 256).to_string());
    }
    if !settings.devices.iter().any(|device| is_pci_address(device)) {
        // Only virtual devices: do not probe (and grab) the host's PCI NICs, and address
        // memory by virtual address (what virtio_user and net_af_xdp want).
        args.push("--no-pci".to_owned());
        if !settings.eal_args.iter().any(|arg| arg.starts_with("--iova-mode")) {
            args.push("--iova-mode=va".to_owned());
        }
    }
    for device in &settings.devices {
        if is_pci_address(device) {
            args.push("-a".to_owned());
            args.push(device.clone());
        } else {
            args.push("--vdev".to_owned());
            args.push(virtio_user_devargs(
                &af_xdp_devargs(device, settings.queues, xdp_program),
                settings.rx_ring_size,
            ));
        }
    }
    args.extend(settings.eal_args.iter().cloned());
    args
}

/// The interface of a `net_af_xdp` device string, if it is one.
pub fn af_xdp_interface(device: &str) -> Option<&str> {
    let mut parts = device.split(',');
    if !parts.next()?.starts_with("net_af_xdp") {
        return None;
    }
    parts.find_map(|part| part.strip_prefix("iface="))
}

/// A `net_af_xdp` device gets Beeline's classifier and the node's queue count unless the
/// device string already sets them; other devices pass unchanged.
fn af_xdp_devargs(device: &str, queues: u32, xdp_program: Option<&Path>) -> String {
    if af_xdp_interface(device).is_none() {
        return device.to_owned();
    }
    let mut out = device.to_owned();
    if let Some(program) = xdp_program.filter(|_| !device.contains("xdp_prog=")) {
        out.push_str(&format!(",xdp_prog={}", program.display()));
    }
    if !device.contains("queue_count=") {
        out.push_str(&format!(",start_queue=0,queue_count={queues}"));
    }
    out
}

/// A `net_virtio_user` device's vrings are `queue_size` long (DPDK's default is 256);
/// unless the device string sets it, they get the node's RX ring size, as a VM's
/// `rx_queue_size` would.
fn virtio_user_devargs(device: &str, ring_size: u16) -> String {
    if !device.starts_with("net_virtio_user") || device.contains("queue_size=") {
        return device.to_owned();
    }
    format!("{device},queue_size={ring_size}")
}

/// The EAL and the pool whose memory is the arena. Fields drop in order: the pool before
/// the EAL. The port ([`DpdkBackend`]) must be dropped before this.
pub struct DpdkRuntime {
    memory: DpdkMemory,
    _eal: Eal,
}

impl DpdkRuntime {
    /// Starts the EAL and lays out the pool for `settings`.
    pub fn start(settings: &NodeSettings) -> Result<Self, BackendError> {
        let dpdk = settings.backend.dpdk().ok_or(BackendError::NoSettings)?;
        let wants_program = dpdk.devices.iter().any(|device| af_xdp_interface(device).is_some());
        let program_path = settings.data_dir.join("beeline_xdp.o");
        if wants_program {
            std::fs::create_dir_all(&settings.data_dir)
                .and_then(|()| std::fs::write(&program_path, beeline_xdp::object()))
                .map_err(|error| BackendError::Io(format!("writing {}: {error}", program_path.display())))?;
        }
        let arena_bytes = u64::from(settings.arena_frames) * u64::from(settings.frame_bytes);
        let args = eal_args(dpdk, settings.hugepages, arena_bytes, wants_program.then_some(program_path.as_path()));
        info!(args = %args.join(" "), "starting DPDK's EAL");
        let eal = Eal::init(&args)?;
        let memory = DpdkMemory::create(&eal, "beeline", settings.arena_frames, settings.frame_bytes as usize)?;
        Ok(Self { memory, _eal: eal })
    }

    pub fn layout(&self) -> PoolLayout {
        self.memory.layout()
    }

    pub fn arena(&mut self) -> Result<Arena<'_>, BackendError> {
        Ok(self.memory.arena()?)
    }
}

/// A started DPDK port, and the classifier in front of it for `net_af_xdp`.
pub struct DpdkBackend {
    pub(crate) io: DpdkIo,
    classifier: Option<AdoptedClassifier>,
    pub(crate) fragment_bytes_cap: u16,
    listen: SocketAddr,
}

impl DpdkBackend {
    pub fn open(settings: &NodeSettings, layout: PoolLayout, arena: &mut Arena<'_>) -> Result<Self, BackendError> {
        let dpdk = settings.backend.dpdk().ok_or(BackendError::NoSettings)?;
        let config = DpdkConfig {
            queues: dpdk.queues as u16,
            rx_ring_size: dpdk.rx_ring_size,
            tx_ring_size: dpdk.tx_ring_size,
            mtu: dpdk.mtu,
            ip: settings.listen.ip(),
            udp_port: settings.listen.port(),
            peers: 1024,
        };
        let io = DpdkIo::open(layout, arena, config, &dpdk.devices.join(" "))?;
        let fragment_bytes_cap = usize::from(dpdk.mtu)
            .saturating_sub(
                beeline_dataplane::io::netstack::IPV4_LEN
                    + beeline_dataplane::io::netstack::UDP_LEN
                    + beeline_dataplane::wire::HEADER_LEN,
            )
            .min(usize::from(u16::MAX)) as u16;
        let classifier = match dpdk.devices.first().and_then(|device| af_xdp_interface(device)) {
            None => None,
            Some(interface) => {
                let rx_queues = crate::backend::interface_rx_queues(interface);
                if rx_queues > dpdk.queues as usize {
                    warn!(
                        interface,
                        rx_queues,
                        queues = dpdk.queues,
                        "the interface has more RX queues than the node serves: storage packets arriving on the \
                         others find no socket and are dropped (xdp_drop_no_socket); raise queues or steer them with \
                         `ethtool -L {interface} combined N`"
                    );
                }
                let mut classifier = AdoptedClassifier::adopt(interface)?;
                let prefixes: Vec<(IpAddr, u8)> = settings.allow.prefixes().iter().map(|p| (p.addr, p.len)).collect();
                classifier.set_allowlist(&prefixes)?;
                classifier.set_port(settings.listen.port())?;
                info!(
                    interface,
                    program_id = classifier.program_id(),
                    "net_af_xdp runs Beeline's XDP classifier: storage traffic to the port, the rest to the kernel"
                );
                Some(classifier)
            }
        };
        let mac = io.mac();
        info!(
            port = io.port_name(),
            driver = io.driver(),
            mac = %format_mac(&mac),
            ipv6_link_local = %io.ipv6_link_local(),
            queues = io.config().queues,
            rx_ring = io.config().rx_ring_size,
            tx_ring = io.config().tx_ring_size,
            "DPDK port started: RX rings fill arena frames, replies leave from them"
        );
        Ok(Self { io, classifier, fragment_bytes_cap, listen: settings.listen })
    }

    pub fn describe(&self) -> String {
        let config = self.io.config();
        let classifier = match &self.classifier {
            Some(classifier) => format!("; XDP classifier program id {}", classifier.program_id()),
            None => String::new(),
        };
        format!(
            "dpdk port {} ({}), mac {}, link-local {}, {} on {} queue(s), rings {}/{}{classifier}",
            self.io.port_name(),
            self.io.driver(),
            format_mac(&self.io.mac()),
            self.io.ipv6_link_local(),
            self.listen,
            config.queues,
            config.rx_ring_size,
            config.tx_ring_size
        )
    }

    pub fn counters(&self) -> Vec<(String, u64)> {
        let c = self.io.counters();
        let port = self.io.port_stats();
        let (owned, pooled) = self.io.frames_in_dpdk();
        let mut out = vec![
            ("dpdk_rx_packets".to_owned(), c.rx_packets),
            ("dpdk_rx_bytes".to_owned(), c.rx_bytes),
            ("dpdk_tx_packets".to_owned(), c.tx_packets),
            ("dpdk_tx_bytes".to_owned(), c.tx_bytes),
            ("dpdk_arp_replies".to_owned(), c.arp_replies),
            ("dpdk_echo_replies".to_owned(), c.echo_replies),
            ("dpdk_nd_replies".to_owned(), c.nd_replies),
            ("dpdk_echo6_replies".to_owned(), c.echo6_replies),
            ("dpdk_rx_not_udp".to_owned(), c.rx_not_udp),
            ("dpdk_rx_not_ours".to_owned(), c.rx_not_ours),
            ("dpdk_rx_multi_segment".to_owned(), c.rx_multi_segment),
            ("dpdk_tx_no_route".to_owned(), c.tx_no_route),
            ("dpdk_tx_ring_full".to_owned(), c.tx_ring_full),
            ("dpdk_tx_bad_packet".to_owned(), c.tx_bad_packet),
            ("dpdk_pool_refilled".to_owned(), c.pool_refilled),
            ("dpdk_pool_drained".to_owned(), c.pool_drained),
            ("dpdk_frames_owned".to_owned(), u64::from(owned)),
            ("dpdk_frames_pooled".to_owned(), u64::from(pooled)),
            ("dpdk_port_ipackets".to_owned(), port.ipackets),
            ("dpdk_port_opackets".to_owned(), port.opackets),
            ("dpdk_port_imissed".to_owned(), port.imissed),
            ("dpdk_port_ierrors".to_owned(), port.ierrors),
            ("dpdk_port_oerrors".to_owned(), port.oerrors),
            ("dpdk_port_rx_nombuf".to_owned(), port.rx_nombuf),
        ];
        for queue in 0..usize::from(self.io.config().queues).min(port.queue_ipackets.len()) {
            out.push((format!("dpdk_rxq{queue}_packets"), port.queue_ipackets[queue]));
        }
        if let Some(classifier) = &self.classifier {
            match classifier.counters() {
                Ok(counters) => {
                    for verdict in beeline_xdp::Verdict::ALL {
                        out.push((format!("xdp_{}_packets", verdict.name()), counters.get(verdict).packets));
                        out.push((format!("xdp_{}_bytes", verdict.name()), counters.get(verdict).bytes));
                    }
                }
                Err(error) => warn!(%error, "reading the XDP classifier's counters failed"),
            }
        }
        out
    }
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":")
}

impl From<DpdkError> for BackendError {
    fn from(error: DpdkError) -> Self {
        BackendError::Dpdk(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(devices: &[&str]) -> DpdkSettings {
        DpdkSettings {
            devices: devices.iter().map(|d| d.to_string()).collect(),
            cores: "1".into(),
            file_prefix: "beeline-7777".into(),
            eal_args: vec!["--log-level=lib.eal:notice".into()],
            rx_ring_size: 1024,
            tx_ring_size: 1024,
            mtu: 1500,
            queues: 2,
        }
    }

    #[test]
    fn eal_arguments_follow_the_config() {
        let program = Path::new("/var/lib/beeline/beeline_xdp.o");
        let args = eal_args(&settings(&["net_af_xdp0,iface=veth0"]), HugepagePolicy::Require, 64 << 20, Some(program));
        let line = args.join(" ");
        assert!(
            line.starts_with("-l 1 --file-prefix beeline-7777 --in-memory --single-file-segments --no-pci"),
            "{line}"
        );
        assert!(
            line.contains(
                "--vdev net_af_xdp0,iface=veth0,xdp_prog=/var/lib/beeline/beeline_xdp.o,start_queue=0,queue_count=2"
            ),
            "{line}"
        );
        assert!(line.ends_with("--log-level=lib.eal:notice"), "{line}");

        let args = eal_args(&settings(&["0000:00:06.0"]), HugepagePolicy::Off, 64 << 20, None);
        let line = args.join(" ");
        assert!(line.contains("--no-huge --no-shconf -m 320") && line.contains("-a 0000:00:06.0"), "{line}");
        assert!(!line.contains("--in-memory"), "the EAL refuses --in-memory with --no-huge: {line}");
        assert!(!line.contains("--no-pci"), "{line}");

        let args = eal_args(&settings(&["net_virtio_user0,path=/tmp/v.sock"]), HugepagePolicy::Require, 1, None);
        assert!(args.join(" ").contains("--vdev net_virtio_user0,path=/tmp/v.sock,queue_size=1024 --log"), "{args:?}");
        let args = eal_args(
            &settings(&["net_virtio_user0,path=/tmp/v.sock,queue_size=256"]),
            HugepagePolicy::Require,
            1,
            None,
        );
        assert!(args.join(" ").contains("queue_size=256 --log"), "{args:?}");
    }

    #[test]
    fn af_xdp_interfaces_are_found_in_device_strings() {
        assert_eq!(af_xdp_interface("net_af_xdp0,iface=veth3,start_queue=0"), Some("veth3"));
        assert_eq!(af_xdp_interface("net_virtio_user0,path=/x"), None);
        assert_eq!(af_xdp_interface("net_af_xdp1"), None);
    }
}
