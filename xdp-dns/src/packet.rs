//! Packet access: bounds-checked pointers for the verifier, whole-word loads and stores.

use crate::*;

/// `x`, opaque to LLVM (it can no longer derive it from, or fold it into, anything
/// else), pinned in a register. Like `core::hint::black_box`, which on BPF costs a
/// stack store and load for every use.
#[inline(always)]
pub(crate) fn opaque(mut x: usize) -> usize {
    // SAFETY: a register move onto itself (a `mov` of a register to itself, which the
    // x86-64 JIT does not even emit); it only claims it may change `x`. Not an empty
    // template: an instruction without code would repeat its line-info offset, which
    // the kernel rejects.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    };
    x
}

/// A checked pointer to a `T` at `offset` in the packet.
///
/// `opaque` pins the pointer in one register: without it LLVM may fold this check
/// into a neighbour's and recompute the pointer for the access, and the verifier only
/// trusts the exact register it saw compared with `data_end`.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Pass> {
    if offset > MAX_PACKET {
        return Err(counter::PASS_TRUNCATED);
    }
    let p = opaque(ctx.data() + offset);
    if p + size_of::<T>() > ctx.data_end() {
        return Err(counter::PASS_TRUNCATED);
    }
    Ok(p as *mut T)
}

/// `index & mask`, with the mask kept in the code: LLVM drops a mask it can prove
/// redundant from earlier checks, but the verifier may not have followed those.
#[inline(always)]
pub(crate) fn masked(index: usize, mask: usize) -> usize {
    opaque(index) & mask
}

#[inline(always)]
pub(crate) fn read_u8(ctx: &XdpContext, offset: usize) -> Result<u8, Pass> {
    // SAFETY: ptr_at checked the byte lies inside the packet.
    Ok(unsafe { *ptr_at::<u8>(ctx, offset)? })
}

#[inline(always)]
pub(crate) fn read_u16(ctx: &XdpContext, offset: usize) -> Result<u16, Pass> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: ptr_at checked both bytes lie inside the packet.
    Ok(u16::from_be(unsafe { pkt::ld16(p.cast()) }))
}

#[inline(always)]
pub(crate) fn write_bytes<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    bytes: [u8; N],
) -> Result<(), Pass> {
    // SAFETY: ptr_at checked all N bytes lie inside the packet.
    unsafe { ptr_at::<[u8; N]>(ctx, offset)?.write_unaligned(bytes) };
    Ok(())
}

/// Whole-word packet accesses in memory byte order: one BPF instruction each.
///
/// `read_unaligned`/`write_unaligned` of a `[u8; N]` in the packet compile to N byte
/// accesses (plus shifts and ors to assemble a word), because the BPF backend assumes
/// strict alignment. The kernel does not require aligned packet access on the
/// architectures geodns runs on (x86-64, arm64: the verifier checks packet alignment
/// only with `BPF_F_STRICT_ALIGNMENT` or without efficient unaligned access), so these
/// write the one load or store out in assembly; a Rust `read()` of a misaligned `*const
/// u64` would be undefined behaviour instead.
///
/// # Safety
/// `p .. p + size` must lie in the packet: `p` is a pointer `ptr_at` returned (or one at
/// a constant offset inside the range it checked).
pub(crate) mod pkt {
    use core::arch::asm;

    // Callers build words with `from_le_bytes` and sum checksums in memory byte order
    // as little-endian words: only bpfel is built.
    #[cfg(target_endian = "big")]
    compile_error!("the pkt accesses and their callers assume little-endian BPF (bpfel)");

    macro_rules! load {
        ($name:ident, $t:ty, $insn:literal) => {
            #[inline(always)]
            pub unsafe fn $name(p: *const u8) -> $t {
                let v: u64;
                // SAFETY: see the module's contract.
                unsafe {
                    asm!($insn, v = lateout(reg) v, p = in(reg) p,
                        options(nostack, readonly, preserves_flags));
                }
                #[allow(clippy::cast_possible_truncation, reason = "zero-extended load")]
                {
                    v as $t
                }
            }
        };
    }
    macro_rules! store {
        ($name:ident, $t:ty, $insn:literal) => {
            #[inline(always)]
            pub unsafe fn $name(p: *mut u8, v: $t) {
                // SAFETY: see the module's contract.
                unsafe {
                    asm!($insn, p = in(reg) p, v = in(reg) u64::from(v),
                        options(nostack, preserves_flags));
                }
            }
        };
    }
    load!(ld16, u16, "{v} = *(u16 *)({p} + 0)");
    load!(ld32, u32, "{v} = *(u32 *)({p} + 0)");
    load!(ld64, u64, "{v} = *(u64 *)({p} + 0)");
    store!(st16, u16, "*(u16 *)({p} + 0) = {v}");
    store!(st32, u32, "*(u32 *)({p} + 0) = {v}");
    store!(st64, u64, "*(u64 *)({p} + 0) = {v}");
}
