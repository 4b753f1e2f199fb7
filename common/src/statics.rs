//! The zone's static answers in the kernel (`STATIC_NODES_*`, `STATIC_ANSWERS_*`):
//! SOA, NS with glue, static records, NODATA, NXDOMAIN, wildcard expansions and
//! REFUSED, each a precomputed reply tail the kernel copies after the question.
//!
//! The kernel finds a name's node through the wildcard keys of `NAMES_*` (every name
//! that exists has one, see `NameEntry::node`): found at the query name itself, the
//! node's `exact` answers apply; found at an ancestor (the closest encloser, RFC 4592),
//! its `below` answers (a wildcard's records, a referral, or NXDOMAIN); found nowhere,
//! the name is outside every zone and [`STATIC_REFUSED`] answers.
//!
//! An answer's bytes were written by the userspace server for a question of
//! [`StaticAnswer::base`] bytes (the name itself, or `*.` and the closest encloser): a
//! compression pointer to offset 12 names the question as asked; every other pointer
//! (listed in `fix`) moves by the difference between the query name's length and
//! `base`, since everything it points at sits that much further in the reply.
use core::mem::size_of;

/// Bytes of the records an answer holds (after the question, before OPT).
pub const STATIC_MAX_BLOB: usize = 384;
/// Most compression pointers an answer's bytes may hold that move with the name.
pub const STATIC_MAX_FIXUPS: usize = 16;
/// Query types with their own answer per node and position (others take `*_other`).
pub const STATIC_NODE_TYPES: usize = 8;
/// Entries of `STATIC_NODES_*` (node 0: every answer passes).
pub const STATIC_NODES: u32 = 1 << 14;
/// Entries of `STATIC_ANSWERS_*` (answer 0: pass).
pub const STATIC_ANSWERS: u32 = 1 << 11;
/// The answer for a name outside every zone.
pub const STATIC_REFUSED: u32 = 1;
/// [`StaticAnswer::flags`]: AA.
pub const STATIC_FLAG_AA: u8 = 0x04;

/// What one name answers, by query type: at the name itself (`exact`) and for a name
/// below it that does not exist, when it is the closest encloser (`below`). Each
/// value is an index of `STATIC_ANSWERS_*`; 0 passes the query to userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct StaticNode {
    pub exact_types: [u16; STATIC_NODE_TYPES],
    pub exact: [u16; STATIC_NODE_TYPES],
    pub below_types: [u16; STATIC_NODE_TYPES],
    pub below: [u16; STATIC_NODE_TYPES],
    /// Any type not listed.
    pub exact_other: u16,
    pub below_other: u16,
    pub _pad: [u16; 2],
}
const _: () = assert!(size_of::<StaticNode>() == 4 * 2 * STATIC_NODE_TYPES + 8);

/// One precomputed reply tail (see the module).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StaticAnswer {
    /// 1 for an answer; 0: pass.
    pub valid: u8,
    /// [`STATIC_FLAG_AA`] or 0 (byte 2 of the header, besides QR, TC and RD).
    pub flags: u8,
    /// RCODE (byte 3 of the header, besides CD).
    pub rcode: u8,
    /// `RRL_CLASS_*` of the reply.
    pub rrl_class: u8,
    pub an: u16,
    pub ns: u16,
    pub ar: u16,
    /// Bytes of `blob` in use.
    pub len: u16,
    /// Wire length of the question name the bytes were written for.
    pub base: u16,
    pub n_fix: u16,
    /// Offsets in `blob` of the pointers that move with the name's length.
    pub fix: [u16; STATIC_MAX_FIXUPS],
    pub blob: [u8; STATIC_MAX_BLOB],
}
const _: () = assert!(size_of::<StaticAnswer>() == 16 + 2 * STATIC_MAX_FIXUPS + STATIC_MAX_BLOB);
const _: () = assert!(core::mem::offset_of!(StaticAnswer, blob) % 8 == 0);

impl StaticAnswer {
    pub const EMPTY: Self = Self {
        valid: 0,
        flags: 0,
        rcode: 0,
        rrl_class: 0,
        an: 0,
        ns: 0,
        ar: 0,
        len: 0,
        base: 0,
        n_fix: 0,
        fix: [0; STATIC_MAX_FIXUPS],
        blob: [0; STATIC_MAX_BLOB],
    };
}
