//! Memory for the buffer arena: one anonymous mapping, taken once at start-up.
//!
//! [`ArenaMemory`] owns the frame region (on 2 MiB hugepages when it can get them, so that
//! a large arena costs a handful of TLB entries instead of thousands) together with the
//! free list and the allocation bitmap the [`Arena`] keeps its bookkeeping in. The region
//! is mapped with `MAP_POPULATE`, so every page is faulted in here and never on the packet
//! path. [`ArenaMemory::arena`] lends all of it to an [`Arena`].

use core::ptr::NonNull;
use std::io;
use std::string::String;
use std::vec;
use std::vec::Vec;

use crate::arena::Arena;

/// Size of the hugepages the arena asks for.
pub const HUGE_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Smallest and largest frame size the [`Arena`] accepts.
const FRAME_SIZE_MIN: usize = 512;
const FRAME_SIZE_MAX: usize = 65536;

/// Which pages the arena should be mapped on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePolicy {
    /// 2 MiB hugepages or nothing: allocation fails if none are reserved.
    Huge,
    /// 2 MiB hugepages if reserved, otherwise normal pages plus a warning that says how to
    /// reserve them (see [`ArenaMemory::fallback_warning`]).
    PreferHuge,
    /// Normal (4 KiB) pages.
    Normal,
}

/// Which pages the arena actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageBacking {
    Huge2M,
    Normal,
}

/// Why the arena memory could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum ArenaMemoryError {
    #[error(
        "frame size {frame_size} bytes is not supported: use a power of two between \
         {FRAME_SIZE_MIN} and {FRAME_SIZE_MAX} bytes"
    )]
    BadFrameSize { frame_size: usize },
    #[error("the arena needs at least one frame: raise the frame count")]
    NoFrames,
    #[error(
        "an arena of {frame_count} frames of {frame_size} bytes does not fit in the address \
         space: lower the frame count or the frame size"
    )]
    TooLarge { frame_count: u32, frame_size: usize },
    #[error(
        "could not map {bytes} bytes of 2 MiB hugepages for the arena ({os_error}): it needs \
         {pages_needed} free hugepages; reserve them as root with `{reserve_command}`, or \
         start with normal pages"
    )]
    HugePagesUnavailable { bytes: usize, pages_needed: usize, reserve_command: String, os_error: io::Error },
    #[error(
        "could not map {bytes} bytes for the arena ({os_error}): lower the frame count or the \
         frame size, or raise the memory limit (ulimit -v, the cgroup's memory.max)"
    )]
    Map { bytes: usize, os_error: io::Error },
}

/// The arena's frame region plus its bookkeeping, allocated once.
pub struct ArenaMemory {
    /// Start of the mapping; valid for `map_len` bytes until `drop`.
    base: NonNull<u8>,
    /// Length passed to `mmap` (and to `munmap`), rounded up to the page size in use.
    map_len: usize,
    /// `frame_count * frame_size`: the part of the mapping handed to the arena.
    arena_len: usize,
    frame_size: usize,
    frame_count: u32,
    free: Vec<u32>,
    allocated: Vec<u64>,
    backing: PageBacking,
    fallback_warning: Option<String>,
}

// SAFETY: `ArenaMemory` is the sole owner of its private anonymous mapping (nothing else
// holds `base`), so moving it to another thread moves exclusive ownership of the bytes,
// like moving a `Vec<u8>`. It is deliberately not `Sync`.
unsafe impl Send for ArenaMemory {}

impl ArenaMemory {
    /// Maps `frame_count * frame_size` bytes (rounded up to 2 MiB on hugepages) and faults
    /// every page in, and allocates the free list and ownership bitmap for the arena.
    pub fn allocate(frame_count: u32, frame_size: usize, pages: PagePolicy) -> Result<ArenaMemory, ArenaMemoryError> {
        if !frame_size.is_power_of_two() || !(FRAME_SIZE_MIN..=FRAME_SIZE_MAX).contains(&frame_size) {
            return Err(ArenaMemoryError::BadFrameSize { frame_size });
        }
        if frame_count == 0 {
            return Err(ArenaMemoryError::NoFrames);
        }
        let too_large = ArenaMemoryError::TooLarge { frame_count, frame_size };
        let Some(arena_len) = (frame_count as usize).checked_mul(frame_size) else {
            return Err(too_large);
        };
        let Some(huge_len) = arena_len.checked_next_multiple_of(HUGE_PAGE_BYTES) else {
            return Err(too_large);
        };
        if huge_len > isize::MAX as usize {
            return Err(too_large);
        }

        let (base, map_len, backing, fallback_warning) = match pages {
            PagePolicy::Normal => {
                let base =
                    map(arena_len, false).map_err(|os_error| ArenaMemoryError::Map { bytes: arena_len, os_error })?;
                (base, arena_len, PageBacking::Normal, None)
            }
            PagePolicy::Huge => {
                let base = map(huge_len, true).map_err(|os_error| {
                    let pages_needed = huge_len / HUGE_PAGE_BYTES;
                    ArenaMemoryError::HugePagesUnavailable {
                        bytes: huge_len,
                        pages_needed,
                        reserve_command: reserve_command(pages_needed),
                        os_error,
                    }
                })?;
                (base, huge_len, PageBacking::Huge2M, None)
            }
            PagePolicy::PreferHuge => match map(huge_len, true) {
                Ok(base) => (base, huge_len, PageBacking::Huge2M, None),
                Err(huge_error) => {
                    let base = map(arena_len, false)
                        .map_err(|os_error| ArenaMemoryError::Map { bytes: arena_len, os_error })?;
                    let pages_needed = huge_len / HUGE_PAGE_BYTES;
                    let warning = std::format!(
                        "the {arena_len}-byte arena is on normal pages because \
                         {pages_needed} hugepages of 2 MiB could not be mapped ({huge_error}); \
                         for fewer TLB misses reserve them as root with `{}` (or set \
                         vm.nr_hugepages in /etc/sysctl.conf) and restart",
                        reserve_command(pages_needed)
                    );
                    (base, arena_len, PageBacking::Normal, Some(warning))
                }
            },
        };

        Ok(ArenaMemory {
            base,
            map_len,
            arena_len,
            frame_size,
            frame_count,
            free: vec![0; frame_count as usize],
            allocated: vec![0; (frame_count as usize).div_ceil(64)],
            backing,
            fallback_warning,
        })
    }

    /// Builds an [`Arena`] over the whole region, every frame free.
    ///
    /// Each call starts the arena afresh (the free list is rebuilt), so build it once and
    /// keep it for the life of the poll loop; frames handed out by an earlier arena must
    /// not be used with a later one.
    pub fn arena(&mut self) -> Arena<'_> {
        // SAFETY: `base` points to a live mapping of `map_len >= arena_len` bytes, readable
        // and writable (PROT_READ | PROT_WRITE), owned by `self` until `drop` unmaps it.
        // Page alignment satisfies `u8`'s, `arena_len <= isize::MAX` was checked at
        // allocation, and the returned slice borrows `self` mutably, so no other reference
        // to the region can exist while it lives.
        let memory = unsafe { core::slice::from_raw_parts_mut(self.base.as_ptr(), self.arena_len) };
        match Arena::new(memory, self.frame_size, &mut self.free, &mut self.allocated) {
            Ok(arena) => arena,
            // `allocate` checked the frame size and count and sized both bookkeeping vectors
            // for `frame_count` frames, which is every condition `Arena::new` tests.
            Err(error) => unreachable!("arena memory validated at allocation: {error:?}"),
        }
    }

    /// Which pages back the region.
    pub fn backing(&self) -> PageBacking {
        self.backing
    }

    /// For [`PagePolicy::PreferHuge`] that fell back to normal pages: a message for the
    /// operator saying how to reserve hugepages.
    pub fn fallback_warning(&self) -> Option<&str> {
        self.fallback_warning.as_deref()
    }

    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Bytes mapped (the frames' bytes rounded up to the page size in use).
    pub fn mapped_bytes(&self) -> usize {
        self.map_len
    }
}

impl Drop for ArenaMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what `mmap` returned/was given, the mapping
        // has not been unmapped before (this runs once), and no slice into it outlives
        // `self` because `arena()` borrows `self`.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
        debug_assert_eq!(rc, 0, "munmap of the arena failed: {}", io::Error::last_os_error());
    }
}

impl core::fmt::Debug for ArenaMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArenaMemory")
            .field("frame_count", &self.frame_count)
            .field("frame_size", &self.frame_size)
            .field("mapped_bytes", &self.map_len)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

/// Maps `len` bytes of private anonymous read-write memory, populated up front.
fn map(len: usize, huge: bool) -> io::Result<NonNull<u8>> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
    if huge {
        flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
    }
    // SAFETY: an anonymous mapping at an address of the kernel's choosing (null hint, no
    // MAP_FIXED) cannot overlap or alter any existing mapping; fd -1 and offset 0 are what
    // MAP_ANONYMOUS requires. The result is checked against MAP_FAILED before use.
    let ptr = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned a null address"))
}

/// Where the kernel counts its 2 MiB hugepages.
const HUGEPAGES_2M_SYSFS: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// A count from a file of [`HUGEPAGES_2M_SYSFS`]; `None` when it cannot be read.
fn hugepages_2m_count(file: &str) -> Option<usize> {
    std::fs::read_to_string(std::format!("{HUGEPAGES_2M_SYSFS}/{file}")).ok()?.trim().parse().ok()
}

/// The shell command that reserves enough 2 MiB hugepages for `pages_needed` more pages,
/// counting the pages already reserved but in use by others.
fn reserve_command(pages_needed: usize) -> String {
    let target = match (hugepages_2m_count("nr_hugepages"), available_2m_pages()) {
        (Some(total), Some(free)) => total + pages_needed.saturating_sub(free),
        _ => pages_needed,
    };
    // /proc/sys/vm/nr_hugepages counts pages of the default size; use the size-specific
    // file when the default is not 2 MiB.
    let default_is_2m = default_hugepage_is_2m();
    if default_is_2m {
        std::format!("echo {target} > /proc/sys/vm/nr_hugepages")
    } else {
        std::format!("echo {target} > {HUGEPAGES_2M_SYSFS}/nr_hugepages")
    }
}

/// Free 2 MiB pages a new mapping can get: sysfs counts the pages other processes'
/// mappings have reserved as free, but they are theirs. `None` when sysfs cannot say.
fn available_2m_pages() -> Option<usize> {
    let reserved = hugepages_2m_count("resv_hugepages").unwrap_or(0);
    hugepages_2m_count("free_hugepages").map(|free| free.saturating_sub(reserved))
}

/// Whether the kernel's default hugepage size (the one `/proc/sys/vm/nr_hugepages`
/// counts) is 2 MiB; assumed so when `/proc/meminfo` cannot be read.
fn default_hugepage_is_2m() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .map(|meminfo| {
            meminfo
                .lines()
                .any(|line| line.starts_with("Hugepagesize:") && line.split_whitespace().nth(1) == Some("2048"))
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::HEADROOM_BYTES;
    use std::eprintln;
    use std::sync::Mutex;

    /// Serialises the tests that look at or change the machine's hugepage reservation.
    static HUGEPAGES: Mutex<()> = Mutex::new(());

    const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

    fn read_number(path: &str) -> Option<usize> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Reserves extra hugepages for the life of the guard and restores the old count.
    struct Reservation {
        old: usize,
    }

    impl Reservation {
        fn try_add(pages: usize) -> Result<Reservation, String> {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err("not running as root, cannot reserve hugepages".into());
            }
            if !default_hugepage_is_2m() {
                return Err("the default hugepage size is not 2 MiB".into());
            }
            let old = read_number(NR_HUGEPAGES).ok_or("cannot read /proc/sys/vm/nr_hugepages")?;
            std::fs::write(NR_HUGEPAGES, std::format!("{}\n", old + pages))
                .map_err(|e| std::format!("cannot write {NR_HUGEPAGES}: {e}"))?;
            let reservation = Reservation { old };
            let free = available_2m_pages().unwrap_or(0);
            if free < pages {
                return Err(std::format!(
                    "the kernel found only {free} of {pages} free 2 MiB pages (memory fragmented)"
                ));
            }
            Ok(reservation)
        }
    }

    impl Drop for Reservation {
        fn drop(&mut self) {
            if let Err(e) = std::fs::write(NR_HUGEPAGES, std::format!("{}\n", self.old)) {
                eprintln!("could not restore {NR_HUGEPAGES} to {}: {e}", self.old);
            }
        }
    }

    fn write_every_frame(memory: &mut ArenaMemory) {
        let mut arena = memory.arena();
        let count = arena.frame_count() as usize;
        let mut frames = Vec::new();
        while let Some(frame) = arena.alloc() {
            let index = frame.index();
            let bytes = arena.frame_mut(&frame);
            bytes[0] = index as u8;
            bytes[HEADROOM_BYTES] = 0xA5;
            *bytes.last_mut().unwrap() = !(index as u8);
            frames.push(frame);
        }
        assert_eq!(frames.len(), count);
        for frame in frames {
            let index = frame.index();
            let bytes = arena.frame(&frame);
            assert_eq!(bytes[0], index as u8);
            assert_eq!(bytes[HEADROOM_BYTES], 0xA5);
            assert_eq!(*bytes.last().unwrap(), !(index as u8));
            arena.free(frame);
        }
        assert_eq!(arena.free_frames(), count);
    }

    #[test]
    fn normal_pages_allocate_and_frames_are_writable() {
        let mut memory = ArenaMemory::allocate(1000, 2048, PagePolicy::Normal).unwrap();
        assert_eq!(memory.backing(), PageBacking::Normal);
        assert!(memory.fallback_warning().is_none());
        assert_eq!(memory.frame_count(), 1000);
        assert!(memory.mapped_bytes() >= 1000 * 2048);
        {
            let arena = memory.arena();
            assert_eq!(arena.frame_count(), 1000);
            assert_eq!(arena.frame_size(), 2048);
            assert_eq!(arena.region_len(), 1000 * 2048);
        }
        write_every_frame(&mut memory);
        // A second arena over the same memory starts with every frame free again.
        assert_eq!(memory.arena().free_frames(), 1000);
    }

    #[test]
    fn bad_parameters_are_rejected_with_advice() {
        let err = ArenaMemory::allocate(16, 1000, PagePolicy::Normal).unwrap_err();
        assert!(matches!(err, ArenaMemoryError::BadFrameSize { frame_size: 1000 }));
        assert!(err.to_string().contains("power of two"));
        let err = ArenaMemory::allocate(0, 2048, PagePolicy::Normal).unwrap_err();
        assert!(matches!(err, ArenaMemoryError::NoFrames));
        if usize::BITS <= 32 {
            let err = ArenaMemory::allocate(u32::MAX, 65536, PagePolicy::Normal);
            assert!(matches!(err, Err(ArenaMemoryError::TooLarge { .. })));
        }
    }

    #[test]
    fn memory_can_move_to_another_thread() {
        let memory = ArenaMemory::allocate(8, 4096, PagePolicy::Normal).unwrap();
        let mut memory = std::thread::spawn(move || memory).join().unwrap();
        write_every_frame(&mut memory);
    }

    #[test]
    fn prefer_huge_works_with_or_without_reserved_hugepages() {
        let _lock = HUGEPAGES.lock().unwrap_or_else(|e| e.into_inner());
        // 3 MiB of frames: rounds up to two hugepages.
        let mut memory = ArenaMemory::allocate(1536, 2048, PagePolicy::PreferHuge).unwrap();
        match memory.backing() {
            PageBacking::Huge2M => {
                assert!(memory.fallback_warning().is_none());
                assert_eq!(memory.mapped_bytes(), 2 * HUGE_PAGE_BYTES);
            }
            PageBacking::Normal => {
                let warning = memory.fallback_warning().expect("a fallback must say why");
                assert!(warning.contains("nr_hugepages"), "{warning}");
                assert!(warning.contains("echo "), "{warning}");
            }
        }
        write_every_frame(&mut memory);
        drop(memory);

        // Now with hugepages reserved, if this process may reserve them.
        match Reservation::try_add(2) {
            Ok(_reservation) => {
                let mut memory = ArenaMemory::allocate(1536, 2048, PagePolicy::PreferHuge).unwrap();
                assert_eq!(memory.backing(), PageBacking::Huge2M);
                assert!(memory.fallback_warning().is_none());
                write_every_frame(&mut memory);
            }
            Err(why) => crate::testkit::skip(
                "prefer_huge_works_with_or_without_reserved_hugepages (the reserved-hugepage half of this test)",
                &why,
            ),
        }
    }

    #[test]
    fn huge_policy_fails_with_advice_or_gets_hugepages() {
        let _lock = HUGEPAGES.lock().unwrap_or_else(|e| e.into_inner());
        // 4 MiB + 1 frame: rounds up to three hugepages.
        let frames = 2 * 1024 + 1;
        let free_before = available_2m_pages().unwrap_or(0);
        match ArenaMemory::allocate(frames, 2048, PagePolicy::Huge) {
            Ok(mut memory) => {
                assert_eq!(memory.backing(), PageBacking::Huge2M);
                assert_eq!(memory.mapped_bytes(), 3 * HUGE_PAGE_BYTES);
                write_every_frame(&mut memory);
            }
            Err(err) => {
                assert!(free_before < 3, "{free_before} free hugepages but mapping failed: {err}");
                let ArenaMemoryError::HugePagesUnavailable { pages_needed, ref reserve_command, .. } = err else {
                    panic!("wrong error: {err}");
                };
                assert_eq!(pages_needed, 3);
                assert!(reserve_command.contains("nr_hugepages"));
                assert!(err.to_string().contains(reserve_command.as_str()), "{err}");
            }
        }

        match Reservation::try_add(3) {
            Ok(_reservation) => {
                let mut memory = ArenaMemory::allocate(frames, 2048, PagePolicy::Huge).unwrap();
                assert_eq!(memory.backing(), PageBacking::Huge2M);
                write_every_frame(&mut memory);
            }
            Err(why) => crate::testkit::skip(
                "huge_policy_fails_with_advice_or_gets_hugepages (the reserved-hugepage half of this test)",
                &why,
            ),
        }
    }
}
