//! The keys of the shared-memory transport to local clients (`shm*`).

use std::path::PathBuf;

/// Resolved `shm*` keys; `None` in `NodeSettings` when `shm = false`.
#[derive(Debug, Clone)]
pub struct ShmNodeSettings {
    pub socket: PathBuf,
    /// Whether `socket` is the default path (a node that cannot create it, e.g. one not
    /// run as root, then serves UDP only, with a warning).
    pub default_socket: bool,
    pub socket_mode: u32,
    pub clients_max: u32,
    pub ring_slots: u32,
}

pub const CLIENTS_MAX_DEFAULT: u32 = 16;
pub const RING_SLOTS_DEFAULT: u32 = 2048;
pub const SOCKET_MODE_DEFAULT: u32 = 0o660;

/// (key, value, fix) of the first bad key.
pub type KeyError = (&'static str, String, &'static str);

pub fn resolve(
    enabled: bool,
    socket: Option<PathBuf>,
    mode: Option<String>,
    clients_max: Option<u32>,
    ring_slots: Option<u32>,
    port: u16,
) -> Result<Option<ShmNodeSettings>, KeyError> {
    if !enabled {
        return Ok(None);
    }
    let socket_mode = match mode {
        None => SOCKET_MODE_DEFAULT,
        Some(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or((("shm_socket_mode"), text, "use an octal file mode such as \"0660\""))?,
    };
    let clients_max = clients_max.unwrap_or(CLIENTS_MAX_DEFAULT);
    if !(1..=256).contains(&clients_max) {
        return Err(("shm_clients_max", clients_max.to_string(), "must be from 1 to 256"));
    }
    let ring_slots = ring_slots.unwrap_or(RING_SLOTS_DEFAULT);
    if !ring_slots.is_power_of_two() || !(64..=16384).contains(&ring_slots) {
        return Err(("shm_ring_slots", ring_slots.to_string(), "must be a power of two from 64 to 16384"));
    }
    let default_socket = socket.is_none();
    let socket = socket.unwrap_or_else(|| crate::shm::default_socket_path(port));
    Ok(Some(ShmNodeSettings { socket, default_socket, socket_mode, clients_max, ring_slots }))
}
