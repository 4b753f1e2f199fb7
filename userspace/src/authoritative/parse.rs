//! Bounded parsing of DNS queries: header, question, and the OPT record.
//!
//! A cursor over the received bytes; every length and count from the wire is checked
//! against what is left before it is used, and none drives an allocation: a count only
//! bounds a loop whose every turn consumes bytes. Names are validated, never copied:
//! compression pointers must point back into an earlier name (each jump lands before
//! the start of the run of labels it leaves, so chains end), labels are plain (length
//! 0..=63), and a name is at most 255 bytes uncompressed. The question name is always
//! at offset 12 and so can hold no pointer: the parsed question is a slice of the
//! message, exactly as sent.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use geodns_common::dns::{rtype::OPT as TYPE_OPT, CLASS_IN, HEADER_LEN, OPT_ECS};
/// Longest name in wire format (RFC 1035).
pub const MAX_NAME_LEN: usize = 255;

/// Why a message is dropped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Shorter than a DNS header.
    Short,
    /// QR=1: a response; answering it could start a loop between two servers.
    Response,
    /// The header's counts claim more records than the datagram can hold (each
    /// question takes at least 5 bytes, each record 11): not a DNS message at all, e.g.
    /// a daytime or chargen string bounced off a spoofed source. No FORMERR to garbage.
    NotDns,
    /// From UDP source port 0: no client can receive the answer.
    PortZero,
    /// From a reflector service port (`[guard] reflector_ports`).
    ReflectorPort,
    /// Over the response rate limit (`[rrl]`).
    RateLimited,
}

impl Drop {
    pub const ALL: [Self; 6] = [
        Self::Short,
        Self::Response,
        Self::NotDns,
        Self::PortZero,
        Self::ReflectorPort,
        Self::RateLimited,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Response => "response",
            Self::NotDns => "not_dns",
            Self::PortZero => "port_zero",
            Self::ReflectorPort => "reflector_port",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Why a message is answered FORMERR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("the message ends inside {0}")]
    Truncated(&'static str),
    #[error("length byte {byte:#04x} at offset {at}: not a plain label (longer than 63)")]
    LabelType { byte: u8, at: usize },
    #[error("a name longer than 255 bytes")]
    NameTooLong,
    #[error("compression pointer at offset {at} to {target}: not back into an earlier name")]
    BadPointer { at: usize, target: usize },
    #[error("QDCOUNT {0}, expected 1")]
    QuestionCount(u16),
    #[error("question type OPT")]
    QuestionOpt,
    #[error("an OPT record outside the additional section")]
    OptSection,
    #[error("an OPT record whose owner is not the root")]
    OptOwner,
    #[error("more than one OPT record")]
    MultipleOpt,
    #[error("EDNS option at offset {at} runs past the OPT record")]
    BadOption { at: usize },
    #[error("ECS option: {0}")]
    Ecs(EcsError),
    #[error("{0} bytes after the last record")]
    Trailing(usize),
}

/// How an EDNS Client Subnet option breaks RFC 7871 section 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EcsError {
    #[error("shorter than 4 bytes")]
    Short,
    #[error("family {0}, expected 1 (IPv4) or 2 (IPv6)")]
    Family(u16),
    #[error("source prefix /{prefix} longer than the family's {max} bits")]
    PrefixTooLong { prefix: u8, max: u8 },
    #[error("{got} address bytes for a /{prefix} source prefix, expected {want}")]
    AddressLength { prefix: u8, got: usize, want: usize },
    #[error("address bits set past the /{0} source prefix")]
    BitsPastPrefix(u8),
    #[error("scope prefix /{0} in a query, must be 0")]
    Scope(u8),
    #[error("more than one ECS option")]
    Duplicate,
}

/// The fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// The whole flags field as received.
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    #[must_use]
    pub fn qr(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    #[must_use]
    pub fn opcode(&self) -> u8 {
        u8::try_from((self.flags >> 11) & 0xF).unwrap_or(0)
    }

    #[must_use]
    pub fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }

    #[must_use]
    pub fn cd(&self) -> bool {
        self.flags & 0x0010 != 0
    }
}

/// The one question of a query, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question<'a> {
    /// Name, QTYPE and QCLASS exactly as sent (a reply copies them).
    pub raw: &'a [u8],
    /// The name in wire format, uncompressed, case as sent.
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
}

/// A valid EDNS Client Subnet option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecs {
    /// 1: IPv4, 2: IPv6.
    pub family: u16,
    pub source_prefix: u8,
    /// The address bytes as received, zero padded.
    pub addr: [u8; 16],
}

impl Ecs {
    /// The address bytes as sent (`ceil(source_prefix / 8)` of them).
    #[must_use]
    pub fn addr_bytes(&self) -> &[u8] {
        let n = usize::from(self.source_prefix).div_ceil(8);
        self.addr.get(..n).unwrap_or(&[])
    }

    /// The address to decide by: `None` for source prefix 0 (RFC 7871: the client
    /// asks not to use its address; the packet's source is used, like the kernel).
    #[must_use]
    pub fn client(&self) -> Option<IpAddr> {
        if self.source_prefix == 0 {
            return None;
        }
        Some(if self.family == 1 {
            let [a, b, c, d, ..] = self.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        })
    }
}

/// The query's OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size (the OPT record's CLASS).
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// Only parsed for version 0 (other versions' options are not ours to read).
    pub ecs: Option<Ecs>,
}

/// A query as far as it parsed. `error` set means FORMERR; what was read before the
/// error (`question`, `edns`) still shapes the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    /// Set when QDCOUNT is 1 and the question parsed.
    pub question: Option<Question<'a>>,
    /// The first OPT record, once its fixed part parsed.
    pub edns: Option<Edns>,
    pub error: Option<FormatError>,
}

/// Parses `msg`: `Err` for what must be dropped, else the message with any format error.
pub fn parse(msg: &[u8]) -> Result<Message<'_>, Drop> {
    let mut c = Cursor::new(msg, 0);
    let header = Header {
        id: c.u16("the header").map_err(|_| Drop::Short)?,
        flags: c.u16("the header").map_err(|_| Drop::Short)?,
        qdcount: c.u16("the header").map_err(|_| Drop::Short)?,
        ancount: c.u16("the header").map_err(|_| Drop::Short)?,
        nscount: c.u16("the header").map_err(|_| Drop::Short)?,
        arcount: c.u16("the header").map_err(|_| Drop::Short)?,
    };
    if header.qr() {
        return Err(Drop::Response);
    }
    let records = usize::from(header.ancount) + usize::from(header.nscount);
    let least =
        HEADER_LEN + 5 * usize::from(header.qdcount) + 11 * (records + usize::from(header.arcount));
    if least > msg.len() {
        return Err(Drop::NotDns);
    }
    let mut m = Message {
        header,
        question: None,
        edns: None,
        error: None,
    };
    m.error = sections(msg, c, &mut m).err();
    Ok(m)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

fn sections<'a>(msg: &'a [u8], mut c: Cursor<'a>, m: &mut Message<'a>) -> Result<(), FormatError> {
    let h = m.header;
    // Each turn consumes at least five bytes or fails: the count bounds nothing else.
    for _ in 0..h.qdcount {
        let start = c.pos;
        let name_end = skip_name(msg, start)?;
        c.pos = name_end;
        let qtype = c.u16("the question")?;
        let qclass = c.u16("the question")?;
        if h.qdcount == 1 {
            m.question = Some(Question {
                raw: msg.get(start..c.pos).unwrap_or_default(),
                name: msg.get(start..name_end).unwrap_or_default(),
                qtype,
                qclass,
            });
        }
    }
    for (section, count) in [
        (Section::Answer, h.ancount),
        (Section::Authority, h.nscount),
        (Section::Additional, h.arcount),
    ] {
        for _ in 0..count {
            record(msg, &mut c, section, m)?;
        }
    }
    if c.pos != msg.len() {
        return Err(FormatError::Trailing(msg.len().saturating_sub(c.pos)));
    }
    if h.qdcount != 1 {
        return Err(FormatError::QuestionCount(h.qdcount));
    }
    if m.question.is_some_and(|q| q.qtype == TYPE_OPT) {
        return Err(FormatError::QuestionOpt);
    }
    Ok(())
}

/// One resource record: validated and skipped, except an OPT record, which is read.
fn record<'a>(
    msg: &'a [u8],
    c: &mut Cursor<'a>,
    section: Section,
    m: &mut Message<'a>,
) -> Result<(), FormatError> {
    let owner = c.pos;
    c.pos = skip_name(msg, owner)?;
    let rtype = c.u16("a record")?;
    let class = c.u16("a record")?;
    let ttl = c.u32("a record")?;
    let rdlen = usize::from(c.u16("a record")?);
    let rdata_at = c.pos;
    let rdata = c.take(rdlen, "a record's data")?;
    if rtype != TYPE_OPT {
        return Ok(());
    }
    if section != Section::Additional {
        return Err(FormatError::OptSection);
    }
    if m.edns.is_some() {
        return Err(FormatError::MultipleOpt);
    }
    if msg.get(owner) != Some(&0) {
        return Err(FormatError::OptOwner);
    }
    // TTL: extended RCODE, VERSION, then the flags (DO first).
    let [_ext_rcode, version, flags_hi, _] = ttl.to_be_bytes();
    m.edns = Some(Edns {
        payload: class,
        version,
        dnssec_ok: flags_hi & 0x80 != 0,
        ecs: None,
    });
    if version == 0 {
        let ecs = options(rdata, rdata_at)?;
        if let Some(e) = m.edns.as_mut() {
            e.ecs = ecs;
        }
    }
    Ok(())
}

/// Walks the options of a version 0 OPT record; returns the ECS option if any.
/// Unknown options are skipped.
fn options(rdata: &[u8], at: usize) -> Result<Option<Ecs>, FormatError> {
    let mut c = Cursor::new(rdata, 0);
    let mut ecs = None;
    while c.pos < rdata.len() {
        let bad = FormatError::BadOption { at: at + c.pos };
        let code = c.u16("").map_err(|_| bad)?;
        let len = usize::from(c.u16("").map_err(|_| bad)?);
        let data = c.take(len, "").map_err(|_| bad)?;
        if code == OPT_ECS {
            if ecs.is_some() {
                return Err(FormatError::Ecs(EcsError::Duplicate));
            }
            ecs = Some(parse_ecs(data).map_err(FormatError::Ecs)?);
        }
    }
    Ok(ecs)
}

/// RFC 7871 section 6, as the kernel checks it.
fn parse_ecs(data: &[u8]) -> Result<Ecs, EcsError> {
    let [f0, f1, prefix, scope, addr @ ..] = data else {
        return Err(EcsError::Short);
    };
    let family = u16::from_be_bytes([*f0, *f1]);
    let max = match family {
        1 => 32,
        2 => 128,
        f => return Err(EcsError::Family(f)),
    };
    let prefix = *prefix;
    if prefix > max {
        return Err(EcsError::PrefixTooLong { prefix, max });
    }
    if *scope != 0 {
        return Err(EcsError::Scope(*scope));
    }
    let want = usize::from(prefix).div_ceil(8);
    if addr.len() != want {
        return Err(EcsError::AddressLength {
            prefix,
            got: addr.len(),
            want,
        });
    }
    let rem = prefix % 8;
    if rem != 0 && addr.last().is_some_and(|b| b & (0xFF >> rem) != 0) {
        return Err(EcsError::BitsPastPrefix(prefix));
    }
    let mut out = [0u8; 16];
    for (o, a) in out.iter_mut().zip(addr) {
        *o = *a;
    }
    Ok(Ecs {
        family,
        source_prefix: prefix,
        addr: out,
    })
}

/// Validates the name at `start` and returns the offset just past it in place (past
/// its first compression pointer, if any).
///
/// A pointer must land at or after the header and before the start of the run of
/// labels it leaves: every jump goes strictly backwards, so a chain ends, and a loop
/// or a forward pointer is an error.
pub fn skip_name(msg: &[u8], start: usize) -> Result<usize, FormatError> {
    let mut pos = start;
    let mut run_start = start;
    let mut end = None;
    // Uncompressed length so far, root byte not counted.
    let mut len = 0usize;
    loop {
        let b = *msg.get(pos).ok_or(FormatError::Truncated("a name"))?;
        match b & 0xC0 {
            0x00 if b == 0 => return Ok(end.unwrap_or(pos + 1)),
            0x00 => {
                let label = usize::from(b);
                len += 1 + label;
                if len + 1 > MAX_NAME_LEN {
                    return Err(FormatError::NameTooLong);
                }
                if pos + 1 + label > msg.len() {
                    return Err(FormatError::Truncated("a name"));
                }
                pos += 1 + label;
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or(FormatError::Truncated("a name"))?;
                let target = (usize::from(b & 0x3F) << 8) | usize::from(low);
                if target < HEADER_LEN || target >= run_start {
                    return Err(FormatError::BadPointer { at: pos, target });
                }
                end.get_or_insert(pos + 2);
                run_start = target;
                pos = target;
            }
            _ => return Err(FormatError::LabelType { byte: b, at: pos }),
        }
    }
}

/// A read position over untrusted bytes; every read is checked.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(FormatError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(FormatError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}
