//! The `afxdp` keys of the node configuration, validated.

use std::path::PathBuf;

use beeline_xdp::AttachMode;
use tracing::warn;

use super::BackendKind;

/// The `afxdp` keys of the node configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfxdpSettings {
    pub interface: String,
    pub xdp_mode: AttachMode,
    /// RX queues served, from queue 0. Only 1 is built so far.
    pub queues: u32,
    pub require_zero_copy: bool,
    /// The config file `allow` is re-read from on SIGHUP; `None` when `allow` came from
    /// flags (which a reload cannot change).
    pub allow_reload: Option<PathBuf>,
}

/// A rejected `afxdp` key: `(key, value, fix)`, turned into a config error by the caller.
pub type SettingError = (&'static str, String, String);

/// Validates the `afxdp` keys. `None` for other backends (the keys are then ignored, and
/// a warning says so).
pub fn resolve_settings(
    backend: BackendKind,
    interface: Option<String>,
    xdp_mode: Option<String>,
    queues: Option<u32>,
    require_zero_copy: Option<bool>,
    allow_reload: Option<PathBuf>,
) -> Result<Option<AfxdpSettings>, SettingError> {
    if backend != BackendKind::Afxdp {
        if interface.is_some() || xdp_mode.is_some() || queues.is_some() || require_zero_copy.is_some() {
            warn!("interface, xdp_mode, queues and require_zero_copy only apply to backend = \"afxdp\"; ignored");
        }
        return Ok(None);
    }
    let Some(interface) = interface else {
        return Err((
            "interface",
            "(none)".into(),
            "backend = \"afxdp\" needs the interface to serve on, e.g. interface = \"eth0\" (or --interface eth0)"
                .into(),
        ));
    };
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ', '\0']) {
        return Err(("interface", interface, "use an interface name as `ip link` shows it".into()));
    }
    let xdp_mode = match xdp_mode.as_deref().unwrap_or("native") {
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        other => return Err(("xdp_mode", other.into(), "use native or generic".into())),
    };
    let queues = queues.unwrap_or(1);
    if queues != 1 {
        return Err((
            "queues",
            queues.to_string(),
            "serving more than one RX queue is not built yet: set queues = 1 and steer storage traffic to \
             queue 0 (`ethtool -L IF combined 1`, or `ethtool -N IF flow-type udp4 dst-port PORT action 0`)"
                .into(),
        ));
    }
    Ok(Some(AfxdpSettings {
        interface,
        xdp_mode,
        queues,
        require_zero_copy: require_zero_copy.unwrap_or(false),
        allow_reload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn afxdp_settings_need_an_interface_and_one_queue() {
        assert_eq!(resolve_settings(BackendKind::Udp, None, None, None, None, None), Ok(None));
        let (key, _, fix) = resolve_settings(BackendKind::Afxdp, None, None, None, None, None).unwrap_err();
        assert_eq!(key, "interface");
        assert!(fix.contains("--interface"), "{fix}");
        let settings =
            resolve_settings(BackendKind::Afxdp, Some("veth0".into()), None, None, None, None).unwrap().unwrap();
        assert_eq!(settings.xdp_mode, AttachMode::Native);
        assert!(!settings.require_zero_copy);
        let generic =
            resolve_settings(BackendKind::Afxdp, Some("veth0".into()), Some("generic".into()), None, Some(true), None)
                .unwrap();
        assert_eq!(generic.as_ref().unwrap().xdp_mode, AttachMode::Generic);
        assert!(generic.unwrap().require_zero_copy);
        let (key, _, _) =
            resolve_settings(BackendKind::Afxdp, Some("veth0".into()), Some("turbo".into()), None, None, None)
                .unwrap_err();
        assert_eq!(key, "xdp_mode");
        let (key, _, fix) =
            resolve_settings(BackendKind::Afxdp, Some("veth0".into()), None, Some(2), None, None).unwrap_err();
        assert_eq!(key, "queues");
        assert!(fix.contains("not built yet"), "{fix}");
    }
}
