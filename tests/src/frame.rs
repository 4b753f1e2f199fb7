//! Hand-built Ethernet/IP/UDP/DNS frames for the XDP fixtures and benchmarks, and an
//! independent parser and checksum verifier for what the program sends back.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Network layer of a frame: transport addresses.
#[derive(Clone, Copy, Debug)]
pub enum L3 {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

/// A DNS query message, built byte by byte so malformed variants are easy.
#[derive(Clone, Debug)]
pub struct Query {
    id: u16,
    flags: u16,
    counts: Option<(u16, u16, u16)>,
    qname: Vec<u8>,
    qtype: u16,
    qclass: u16,
    edns: Option<Edns>,
    extra_additional: bool,
    second_opt: bool,
    trailing: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Edns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
    /// The must-be-zero EDNS flag bits (dig's `+ednsflags`).
    z: u16,
    options: Vec<(u16, Vec<u8>)>,
}

/// Wire form of a presentation name (no escapes; test names are plain).
#[must_use]
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() {
            continue;
        }
        out.push(u8::try_from(label.len()).expect("label of at most 255 bytes"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

impl Query {
    /// A recursion-desired query for `name`/`qtype`, class IN, id 0x1234.
    #[must_use]
    pub fn new(name: &str, qtype: u16) -> Self {
        Self {
            id: 0x1234,
            flags: 0x0100,
            counts: None,
            qname: wire_name(name),
            qtype,
            qclass: 1,
            edns: None,
            extra_additional: false,
            second_opt: false,
            trailing: Vec::new(),
        }
    }

    #[must_use]
    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// Sets the whole flags field.
    #[must_use]
    pub fn flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    #[must_use]
    pub fn counts(mut self, qd: u16, an: u16, ns: u16) -> Self {
        self.counts = Some((qd, an, ns));
        self
    }

    #[must_use]
    pub fn class(mut self, qclass: u16) -> Self {
        self.qclass = qclass;
        self
    }

    #[must_use]
    pub fn raw_qname(mut self, qname: &[u8]) -> Self {
        self.qname = qname.to_vec();
        self
    }

    #[must_use]
    pub fn trailing(mut self, bytes: &[u8]) -> Self {
        self.trailing = bytes.to_vec();
        self
    }

    fn edns_mut(&mut self) -> &mut Edns {
        self.edns.get_or_insert(Edns {
            payload: 1232,
            version: 0,
            dnssec_ok: false,
            z: 0,
            options: Vec::new(),
        })
    }

    #[must_use]
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns_mut().payload = payload;
        self
    }

    #[must_use]
    pub fn edns_version(mut self, version: u8) -> Self {
        self.edns_mut().version = version;
        self
    }

    #[must_use]
    pub fn dnssec_ok(mut self) -> Self {
        self.edns_mut().dnssec_ok = true;
        self
    }

    /// Sets the must-be-zero EDNS flag bits (everything but DO), like dig's
    /// `+ednsflags`.
    #[must_use]
    pub fn edns_z(mut self, z: u16) -> Self {
        self.edns_mut().z = z & 0x7FFF;
        self
    }

    #[must_use]
    pub fn option(mut self, code: u16, data: &[u8]) -> Self {
        self.edns_mut().options.push((code, data.to_vec()));
        self
    }

    /// A valid ECS option (RFC 7871) for `addr`/`source`, scope 0.
    #[must_use]
    pub fn ecs(self, addr: &str, source: u8) -> Self {
        let ip: IpAddr = addr.parse().expect("ECS address");
        let (family, bytes) = match ip {
            IpAddr::V4(a) => (1, a.octets().to_vec()),
            IpAddr::V6(a) => (2, a.octets().to_vec()),
        };
        let n = usize::from(source).div_ceil(8);
        self.ecs_raw(family, source, 0, &bytes[..n])
    }

    /// An ECS option with any field values, valid or not.
    #[must_use]
    pub fn ecs_raw(self, family: u16, source: u8, scope: u8, addr: &[u8]) -> Self {
        let mut data = family.to_be_bytes().to_vec();
        data.push(source);
        data.push(scope);
        data.extend_from_slice(addr);
        self.option(8, &data)
    }

    /// Adds a second additional record (an A record) after the OPT.
    #[must_use]
    pub fn extra_additional(mut self) -> Self {
        self.extra_additional = true;
        self
    }

    /// Adds a second, empty OPT record at the end of the additional section.
    #[must_use]
    pub fn second_opt(mut self) -> Self {
        self.second_opt = true;
        self
    }

    /// The DNS message bytes.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let ar = u16::from(self.edns.is_some())
            + u16::from(self.extra_additional)
            + u16::from(self.second_opt);
        let (qd, an, ns) = self.counts.unwrap_or((1, 0, 0));
        let mut m = Vec::new();
        for v in [self.id, self.flags, qd, an, ns, ar] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m.extend_from_slice(&self.qname);
        m.extend_from_slice(&self.qtype.to_be_bytes());
        m.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some(e) = &self.edns {
            let mut rdata = Vec::new();
            for (code, data) in &e.options {
                rdata.extend_from_slice(&code.to_be_bytes());
                rdata.extend_from_slice(&u16::try_from(data.len()).expect("len").to_be_bytes());
                rdata.extend_from_slice(data);
            }
            m.push(0);
            m.extend_from_slice(&41u16.to_be_bytes());
            m.extend_from_slice(&e.payload.to_be_bytes());
            m.push(0);
            m.push(e.version);
            let flags = (if e.dnssec_ok { 0x8000u16 } else { 0 }) | e.z;
            m.extend_from_slice(&flags.to_be_bytes());
            m.extend_from_slice(&u16::try_from(rdata.len()).expect("len").to_be_bytes());
            m.extend_from_slice(&rdata);
        }
        if self.extra_additional {
            m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        }
        if self.second_opt {
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        }
        m.extend_from_slice(&self.trailing);
        m
    }
}

/// An Ethernet frame carrying a DNS query.
#[derive(Clone, Debug)]
pub struct Frame {
    l3: L3,
    payload: Vec<u8>,
    vlans: Vec<u16>,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    ipv4_options: bool,
    ipv4_frag: u16,
    ipv6_hop_by_hop: bool,
}

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl Frame {
    #[must_use]
    pub fn new(l3: L3, query: &Query) -> Self {
        Self::raw(l3, query.build())
    }

    /// A frame around any UDP payload.
    #[must_use]
    pub fn raw(l3: L3, payload: Vec<u8>) -> Self {
        Self {
            l3,
            payload,
            vlans: Vec::new(),
            src_port: 40000,
            dst_port: 53,
            protocol: 17,
            ipv4_options: false,
            ipv4_frag: 0,
            ipv6_hop_by_hop: false,
        }
    }

    /// VLAN tags (outer first), each given by its TPID (0x8100 or 0x88A8).
    #[must_use]
    pub fn vlans(mut self, tpids: &[u16]) -> Self {
        self.vlans = tpids.to_vec();
        self
    }

    #[must_use]
    pub fn src_port(mut self, port: u16) -> Self {
        self.src_port = port;
        self
    }

    #[must_use]
    pub fn dst_port(mut self, port: u16) -> Self {
        self.dst_port = port;
        self
    }

    #[must_use]
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    #[must_use]
    pub fn ipv4_options(mut self) -> Self {
        self.ipv4_options = true;
        self
    }

    #[must_use]
    pub fn ipv4_frag(mut self, field: u16) -> Self {
        self.ipv4_frag = field;
        self
    }

    #[must_use]
    pub fn ipv6_hop_by_hop(mut self) -> Self {
        self.ipv6_hop_by_hop = true;
        self
    }

    /// The frame bytes, with correct lengths and checksums.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let mut udp = Vec::new();
        udp.extend_from_slice(&self.src_port.to_be_bytes());
        udp.extend_from_slice(&self.dst_port.to_be_bytes());
        let udp_len = u16::try_from(8 + self.payload.len()).expect("udp length");
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);

        let mut f = Vec::new();
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        let vlan_tci = [0x00u16, 0x64, 0xC8];
        for (i, tpid) in self.vlans.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vlan_tci[i % 3].wrapping_add(7).to_be_bytes());
        }
        match self.l3 {
            L3::V4 { src, dst } => {
                let csum = transport_checksum(&src.octets(), &dst.octets(), 17, &udp);
                udp[6..8].copy_from_slice(&csum.to_be_bytes());
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let opts: &[u8] = if self.ipv4_options {
                    &[1, 1, 1, 0]
                } else {
                    &[]
                };
                let ihl = 5 + opts.len() / 4;
                let total = u16::try_from(ihl * 4 + udp.len()).expect("ip length");
                let mut ip = vec![0x40 | u8::try_from(ihl).expect("ihl"), 0];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0xAB, 0xCD]);
                ip.extend_from_slice(&self.ipv4_frag.to_be_bytes());
                ip.extend_from_slice(&[64, self.protocol, 0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(opts);
                let c = !fold(sum16(&ip));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            L3::V6 { src, dst } => {
                let csum = transport_checksum(&src.octets(), &dst.octets(), 17, &udp);
                udp[6..8].copy_from_slice(&csum.to_be_bytes());
                f.extend_from_slice(&0x86DDu16.to_be_bytes());
                let ext: Vec<u8> = if self.ipv6_hop_by_hop {
                    vec![self.protocol, 0, 1, 4, 0, 0, 0, 0]
                } else {
                    Vec::new()
                };
                let next = if self.ipv6_hop_by_hop {
                    0
                } else {
                    self.protocol
                };
                let plen = u16::try_from(ext.len() + udp.len()).expect("payload length");
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&plen.to_be_bytes());
                f.extend_from_slice(&[next, 64]);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&ext);
            }
        }
        f.extend_from_slice(&udp);
        f
    }
}

/// An ARP request frame.
#[must_use]
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xFF; 6];
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[198, 18, 7, 1, 0, 0, 0, 0, 0, 0, 198, 18, 7, 2]);
    f
}

/// The parts of a frame the fixtures compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlans: Vec<[u8; 4]>,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

struct Layout {
    l3: usize,
    v6: bool,
    l4: usize,
}

fn layout(f: &[u8]) -> Option<Layout> {
    let mut l3 = 14;
    let mut proto = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    while proto == 0x8100 || proto == 0x88A8 {
        proto = u16::from_be_bytes([*f.get(l3 + 2)?, *f.get(l3 + 3)?]);
        l3 += 4;
    }
    match proto {
        0x0800 => Some(Layout {
            l3,
            v6: false,
            l4: l3 + usize::from(f.get(l3)? & 0x0F) * 4,
        }),
        0x86DD => Some(Layout {
            l3,
            v6: true,
            l4: l3 + 40,
        }),
        _ => None,
    }
}

/// Parses an Ethernet/IP/UDP frame (no IP options or extension headers).
#[must_use]
pub fn parse(f: &[u8]) -> Option<Parsed> {
    let lay = layout(f)?;
    let mut vlans = Vec::new();
    let mut at = 12;
    while at + 4 <= lay.l3 - 2 {
        vlans.push([f[at], f[at + 1], f[at + 2], f[at + 3]]);
        at += 4;
    }
    let (src_ip, dst_ip) = if lay.v6 {
        let s: [u8; 16] = f.get(lay.l3 + 8..lay.l3 + 24)?.try_into().ok()?;
        let d: [u8; 16] = f.get(lay.l3 + 24..lay.l3 + 40)?.try_into().ok()?;
        (IpAddr::from(s), IpAddr::from(d))
    } else {
        let s: [u8; 4] = f.get(lay.l3 + 12..lay.l3 + 16)?.try_into().ok()?;
        let d: [u8; 4] = f.get(lay.l3 + 16..lay.l3 + 20)?.try_into().ok()?;
        (IpAddr::from(s), IpAddr::from(d))
    };
    let udp = f.get(lay.l4..)?;
    let udp_len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    Some(Parsed {
        dst_mac: f.get(0..6)?.try_into().ok()?,
        src_mac: f.get(6..12)?.try_into().ok()?,
        vlans,
        src_ip,
        dst_ip,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp.get(8..udp_len)?.to_vec(),
    })
}

/// Checks, independently of the program, that IP and UDP lengths match the frame and
/// that the IPv4 header checksum and the UDP checksum are right.
pub fn verify_lengths_and_checksums(f: &[u8]) -> Result<(), String> {
    let lay = layout(f).ok_or("not IP")?;
    let udp = &f[lay.l4..];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len != udp.len() {
        return Err(format!("UDP length {udp_len}, frame has {}", udp.len()));
    }
    let (src, dst): (Vec<u8>, Vec<u8>) = if lay.v6 {
        let plen = usize::from(u16::from_be_bytes([f[lay.l3 + 4], f[lay.l3 + 5]]));
        if plen != udp.len() {
            return Err(format!(
                "IPv6 payload length {plen}, frame has {}",
                udp.len()
            ));
        }
        (
            f[lay.l3 + 8..lay.l3 + 24].to_vec(),
            f[lay.l3 + 24..lay.l3 + 40].to_vec(),
        )
    } else {
        let ip = &f[lay.l3..lay.l4];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if total != f.len() - lay.l3 {
            return Err(format!(
                "IPv4 total length {total}, frame has {}",
                f.len() - lay.l3
            ));
        }
        if fold(sum16(ip)) != 0xFFFF {
            return Err("IPv4 header checksum wrong".into());
        }
        (ip[12..16].to_vec(), ip[16..20].to_vec())
    };
    if udp[6..8] == [0, 0] {
        return Err("UDP checksum missing".into());
    }
    let mut pseudo = src;
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&u16::try_from(udp.len()).expect("len").to_be_bytes());
    if fold(sum16(&pseudo) + sum16(udp)) != 0xFFFF {
        return Err("UDP checksum wrong".into());
    }
    Ok(())
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    u16::try_from(sum).expect("folded")
}

fn transport_checksum(src: &[u8], dst: &[u8], proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = src.to_vec();
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&u16::try_from(segment.len()).expect("len").to_be_bytes());
    let c = !fold(sum16(&pseudo) + sum16(segment));
    if c == 0 {
        0xFFFF
    } else {
        c
    }
}
