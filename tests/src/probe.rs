//! The fast-path issue's reference probe, rebuilt on the machine that runs the bench: an
//! XDP program that reads one u32 slot of a 2^24-entry array (64 MiB), indexed by the
//! IPv4 source address's /24, and passes. The issue measured it at 122 ns (over a
//! 40 ns empty program) and set its 200 ns target from it; measured in the same run as
//! our figures, it tells what one uniform memory access costs here.
//!
//! Raw instructions, not our object: nothing of geodns is in it, so it cannot get
//! slower or faster with our code.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::{
    bpf::{MapCreateAttr, BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY},
    synth::Rng,
};

/// `bpf(2)` commands and constants (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const XDP_PASS: i32 = 2;

/// The first members of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

/// One `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst) << 8
        | u64::from(src) << 12
        | u64::from(off.cast_unsigned()) << 16
        | u64::from(imm.cast_unsigned()) << 32
}

/// `bpf(2)` returning a new descriptor.
///
/// # Safety
/// `attr` must be the `bpf_attr` prefix `cmd` expects, with valid pointers in it.
unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: the caller's contract; the size is the prefix's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    let fd = i32::try_from(fd).map_err(|_| io::Error::last_os_error())?;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The loaded probe and its array; both are closed on drop.
pub struct SlotProbe {
    _array: OwnedFd,
    prog: OwnedFd,
}

impl SlotProbe {
    /// Slots of the array: one per /24.
    pub const SLOTS: u32 = 1 << 24;

    /// Creates the array (filled with pseudo-random values through a memory mapping,
    /// so every page is its own) and loads the program.
    pub fn load() -> io::Result<Self> {
        let attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: Self::SLOTS,
            map_flags: BPF_F_MMAPABLE,
        };
        // SAFETY: a BPF_MAP_CREATE prefix without pointers.
        let array = unsafe { bpf_fd(BPF_MAP_CREATE, &attr)? };
        fill(&array)?;
        let map = array.as_raw_fd();
        // r2 = data, r3 = data_end; pass unless the 34 bytes up to the IPv4 source
        // address's end are there; key = source >> 8 (host order) on the stack;
        // r0 = lookup(array, &key); r0 = *r0 (the one access measured); pass.
        let prog = [
            insn(0x61, 2, 1, 0, 0),                        // r2 = ctx->data
            insn(0x61, 3, 1, 4, 0),                        // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),                        // r4 = r2
            insn(0x07, 4, 0, 0, 34),                       // r4 += 34
            insn(0x2d, 4, 3, 11, 0),                       // if r4 > r3 goto pass
            insn(0x61, 6, 2, 26, 0),                       // r6 = source address
            insn(0xdc, 6, 0, 0, 32),                       // r6 = be32(r6)
            insn(0x77, 6, 0, 0, 8),                        // r6 >>= 8
            insn(0x63, 10, 6, -4, 0),                      // *(u32 *)(fp - 4) = r6
            insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map),      // r1 = the array
            0,                                             // (second half)
            insn(0xbf, 2, 10, 0, 0),                       // r2 = fp
            insn(0x07, 2, 0, 0, -4),                       // r2 -= 4
            insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // r0 = lookup
            insn(0x15, 0, 0, 1, 0),                        // if r0 == 0 goto pass
            insn(0x61, 0, 0, 0, 0),                        // r0 = *(u32 *)r0
            insn(0xb7, 0, 0, 0, XDP_PASS),                 // pass: r0 = XDP_PASS
            insn(0x95, 0, 0, 0, 0),                        // exit
        ];
        let license = b"GPL\0";
        let mut log = vec![0u8; 4096];
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: u32::try_from(prog.len()).unwrap_or(0),
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: u32::try_from(log.len()).unwrap_or(0),
            log_buf: log.as_mut_ptr() as u64,
        };
        // SAFETY: a BPF_PROG_LOAD prefix; the instructions, license and log buffer
        // outlive the call and their sizes are stated.
        let prog = unsafe { bpf_fd(BPF_PROG_LOAD, &attr) }.map_err(|e| {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            io::Error::other(format!(
                "loading the slot probe: {e}: {}",
                String::from_utf8_lossy(&log[..end])
            ))
        })?;
        Ok(Self {
            _array: array,
            prog,
        })
    }

    /// The program's descriptor, for [`crate::prog_test_run`].
    #[must_use]
    pub fn fd(&self) -> i32 {
        self.prog.as_raw_fd()
    }
}

/// Fills the array through a shared mapping (one pass, a few tens of ms).
fn fill(array: &OwnedFd) -> io::Result<()> {
    let len = 4 * SlotProbe::SLOTS as usize;
    // SAFETY: a fresh shared mapping of the whole (mmapable) array.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            array.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is `len` bytes, u32-aligned (page-aligned), and only ours.
    let slots = unsafe { std::slice::from_raw_parts_mut(base.cast::<u32>(), len / 4) };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for slot in slots {
        #[expect(clippy::cast_possible_truncation, reason = "the low half")]
        let v = rng.next_u64() as u32;
        *slot = v;
    }
    // SAFETY: the mapping made above, not used after this.
    unsafe { libc::munmap(base, len) };
    Ok(())
}
