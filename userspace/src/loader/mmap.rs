//! Shared read-write mappings of `BPF_F_MMAPABLE` arrays: how the loader copies a
//! generation's arrays in and rewrites answer slots in place.
#![allow(clippy::wildcard_imports, reason = "the loader's imports and errors")]
use super::*;

/// A shared read-write mapping of a whole `BPF_F_MMAPABLE` array, unmapped on drop.
pub(super) struct Mapping {
    map: &'static str,
    ptr: *mut u8,
    len: usize,
    value_size: usize,
}

impl Mapping {
    pub(super) fn new(map: &Map, name: &'static str) -> Result<Self, LoaderError> {
        let Map::Array(data) = map else {
            return Err(LoaderError::Missing {
                kind: "array map",
                name: name.to_string(),
            });
        };
        let info = data.info().map_err(|source| LoaderError::Map {
            map: name,
            op: "info",
            source,
        })?;
        // Array values sit 8-aligned, back to back.
        let value_size = (info.value_size() as usize).next_multiple_of(8);
        let len = info.max_entries() as usize * value_size;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a shared read-write mapping of the array's `len` bytes (the kernel
        // allows it for BPF_F_MMAPABLE arrays); unmapped in drop, never aliased.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(LoaderError::Mmap {
                map: name,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            map: name,
            ptr: ptr.cast(),
            len,
            value_size,
        })
    }

    pub(super) fn entries(&self) -> usize {
        self.len / self.value_size
    }

    pub(super) fn check<T>(&self, index: usize, count: usize) -> Result<(), LoaderError> {
        if size_of::<T>() != self.value_size {
            return Err(LoaderError::Missing {
                kind: "array of this value size",
                name: self.map.to_string(),
            });
        }
        if index + count > self.entries() {
            return Err(LoaderError::TooBig {
                map: self.map,
                max: u32::try_from(self.entries()).unwrap_or(u32::MAX),
                needed: index + count,
            });
        }
        Ok(())
    }

    /// Copies `values` to the start of the array.
    pub(super) fn copy_from<T: Pod>(&self, values: &[T]) -> Result<(), LoaderError> {
        self.check::<T>(0, values.len())?;
        // SAFETY: checked to fit; `T` is plain data of the array's value size.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.cast::<T>(), values.len());
        }
        Ok(())
    }

    /// Writes one value (a slot no running program reads, see `update_answers`).
    pub(super) fn write<T: Pod>(&self, index: usize, value: T) -> Result<(), LoaderError> {
        self.check::<T>(index, 1)?;
        // SAFETY: checked to fit; 8-aligned (value size is a multiple of 8).
        unsafe { self.ptr.cast::<T>().add(index).write(value) };
        Ok(())
    }

    /// Stores one u64 atomically: a running program reads the old value or the new one.
    pub(super) fn store_u64(&self, index: usize, value: u64) -> Result<(), LoaderError> {
        self.check::<u64>(index, 1)?;
        // SAFETY: checked to fit; the mapping is page-aligned and values are 8 bytes, so
        // the slot is 8-aligned; the kernel reads it with one 8-byte load.
        #[expect(clippy::cast_ptr_alignment, reason = "8-aligned, see above")]
        let slot = unsafe { &*self.ptr.cast::<std::sync::atomic::AtomicU64>().add(index) };
        slot.store(value, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Copies `values` to the start of a `BPF_F_MMAPABLE` array through a shared mapping:
/// one copy instead of one syscall per slot.
pub(super) fn fill_mmap<T: Pod>(
    map: &Map,
    name: &'static str,
    values: &[T],
) -> Result<(), LoaderError> {
    Mapping::new(map, name)?.copy_from(values)
}
