//! A byte buffer backed by transparent huge pages where the OS offers them, for weights that the
//! kernels stream.
//!
//! Streaming a matrix from DRAM touches a new 4 KiB page every 4 KiB: on the machines we measured
//! (Sapphire Rapids, KVM guest) the page walks cost more than the bytes once the AMX tile kernels
//! run beside the stream — a tile load waits behind the walk, so compute and memory stop
//! overlapping (`docs/benchmarks.md`, "Huge pages"). On Linux this buffer is an anonymous mapping
//! aligned to 2 MiB with `madvise(MADV_HUGEPAGE)`, which the kernel backs with 2 MiB pages when
//! transparent huge pages are set to `always` or `madvise`; elsewhere (or if the mapping fails)
//! it is an ordinary heap buffer, with the same contents and behaviour.

use std::ops::{Deref, DerefMut};

/// Size of a transparent huge page on x86-64 and of the alignment of [`HugeBytes`]' mapping.
pub const HUGE_PAGE: usize = 2 << 20;

/// Zero-initialised bytes, in huge pages where possible (see the module docs).
pub struct HugeBytes {
    storage: Storage,
    len: usize,
}

enum Storage {
    /// An anonymous mapping: `map` as returned by `mmap` (`map_len` bytes), the data at `data`.
    #[cfg(target_os = "linux")]
    Mapped {
        map: *mut u8,
        map_len: usize,
        data: *mut u8,
    },
    Heap(Vec<u8>),
}

// SAFETY: the mapping is owned exclusively by this value (like a Vec's allocation).
unsafe impl Send for HugeBytes {}
// SAFETY: shared access only reads.
unsafe impl Sync for HugeBytes {}

impl HugeBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> HugeBytes {
        #[cfg(target_os = "linux")]
        if len >= HUGE_PAGE {
            if let Some(storage) = map_huge(len) {
                return HugeBytes { storage, len };
            }
        }
        HugeBytes {
            storage: Storage::Heap(vec![0; len]),
            len,
        }
    }

    /// Whether the bytes live in a mapping advised for huge pages (the kernel may still decline
    /// to back it with them; `/proc/self/smaps` tells).
    pub fn is_huge_mapping(&self) -> bool {
        match self.storage {
            #[cfg(target_os = "linux")]
            Storage::Mapped { .. } => true,
            Storage::Heap(_) => false,
        }
    }
}

/// An anonymous mapping of `len` bytes starting on a 2 MiB boundary, advised for huge pages.
#[cfg(target_os = "linux")]
fn map_huge(len: usize) -> Option<Storage> {
    let map_len = len.checked_add(HUGE_PAGE)?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return None;
    }
    let map = map.cast::<u8>();
    let data = map.wrapping_add(map.align_offset(HUGE_PAGE));
    // Advice only: where it is refused the mapping still works with small pages.
    // SAFETY: `data..data + len` lies inside the mapping (the mapping has HUGE_PAGE bytes of room
    // for the alignment).
    unsafe { libc::madvise(data.cast(), len, libc::MADV_HUGEPAGE) };
    Some(Storage::Mapped { map, map_len, data })
}

impl Drop for HugeBytes {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Storage::Mapped { map, map_len, .. } = self.storage {
            // SAFETY: the mapping was created by `map_huge` with this length and is unmapped once.
            unsafe { libc::munmap(map.cast(), map_len) };
        }
    }
}

impl Deref for HugeBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.storage {
            #[cfg(target_os = "linux")]
            // SAFETY: `data` points to `len` initialised (zero-filled by the kernel) bytes owned by
            // this value.
            Storage::Mapped { data, .. } => unsafe { std::slice::from_raw_parts(*data, self.len) },
            Storage::Heap(v) => v,
        }
    }
}

impl DerefMut for HugeBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            #[cfg(target_os = "linux")]
            // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
            Storage::Mapped { data, .. } => unsafe {
                std::slice::from_raw_parts_mut(*data, self.len)
            },
            Storage::Heap(v) => v,
        }
    }
}

impl std::fmt::Debug for HugeBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBytes")
            .field("len", &self.len)
            .field("huge_mapping", &self.is_huge_mapping())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_are_zeroed_writable_and_sized() {
        for len in [0, 1, 4095, HUGE_PAGE + 12_345] {
            let mut b = HugeBytes::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            for (i, x) in b.iter_mut().enumerate() {
                *x = (i % 251) as u8;
            }
            assert!(b.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_are_mapped_on_a_huge_page_boundary() {
        let b = HugeBytes::zeroed(3 * HUGE_PAGE);
        assert!(b.is_huge_mapping());
        assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0);
    }
}
