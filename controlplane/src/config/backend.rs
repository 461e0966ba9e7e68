//! Which packet-I/O backend a node runs on, and that backend's own settings.

use super::afxdp::AfxdpSettings;
use super::dpdk::DpdkSettings;

/// The backends by name, as `backend = "..."` and hardware profiles spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Udp,
    Afxdp,
    Dpdk,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Udp, BackendKind::Afxdp, BackendKind::Dpdk];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Udp => "udp",
            BackendKind::Afxdp => "afxdp",
            BackendKind::Dpdk => "dpdk",
        }
    }

    /// `None` for a name no backend has.
    pub fn parse(name: &str) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The backend a node runs on, with the settings only that backend has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSettings {
    /// Kernel UDP sockets: no settings beyond the node's own.
    Udp,
    Afxdp(AfxdpSettings),
    Dpdk(DpdkSettings),
}

impl BackendSettings {
    pub fn kind(&self) -> BackendKind {
        match self {
            BackendSettings::Udp => BackendKind::Udp,
            BackendSettings::Afxdp(_) => BackendKind::Afxdp,
            BackendSettings::Dpdk(_) => BackendKind::Dpdk,
        }
    }

    pub fn afxdp(&self) -> Option<&AfxdpSettings> {
        match self {
            BackendSettings::Afxdp(settings) => Some(settings),
            _ => None,
        }
    }

    pub fn dpdk(&self) -> Option<&DpdkSettings> {
        match self {
            BackendSettings::Dpdk(settings) => Some(settings),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for BackendKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        BackendKind::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown backend {name:?}: use udp, afxdp or dpdk")))
    }
}
