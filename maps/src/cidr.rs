//! A network prefix (`198.51.100.0/24`, `2001:db8::/32`).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IPv4 or IPv6 prefix whose host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Why a string is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrParseError {
    #[error("expected ADDRESS/LENGTH, e.g. 198.51.100.0/24")]
    NoSlash,
    #[error("`{0}` is not an IP address: expected ADDRESS/LENGTH")]
    Address(String),
    #[error("prefix length `{0}`: expected a number from 0 to {1}")]
    Length(String, u8),
    #[error("host bits are set: expected the network address ({0})")]
    HostBits(Cidr),
}

impl Cidr {
    /// The prefix of length `len` containing `addr` (host bits are cleared).
    /// `len` is clamped to the family's width.
    #[must_use]
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let len = len.min(family_bits(addr));
        Self {
            addr: mask(addr, len),
            len,
        }
    }

    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    #[must_use]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Never true: a prefix always holds at least one address. Here for clippy's sake.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    #[must_use]
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` lies inside this prefix (always false across families).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }
}

fn family_bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// `addr` with every bit past `len` cleared.
#[must_use]
pub(crate) fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').ok_or(CidrParseError::NoSlash)?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| CidrParseError::Address(a.to_owned()))?;
        let max = family_bits(addr);
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| CidrParseError::Length(l.to_owned(), max))?;
        let cidr = Self::new(addr, len);
        if cidr.addr != addr {
            return Err(CidrParseError::HostBits(cidr));
        }
        Ok(cidr)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let c: Cidr = "198.51.100.0/24".parse().expect("parse v4");
        assert_eq!(c.to_string(), "198.51.100.0/24");
        let c: Cidr = "2001:db8::/32".parse().expect("parse v6");
        assert_eq!(c.len(), 32);
        assert!(c.contains("2001:db8::1".parse().expect("ip")));
        assert!(!c.contains("2001:db9::1".parse().expect("ip")));
        assert!(!c.contains("1.2.3.4".parse().expect("ip")));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!("1.2.3.0".parse::<Cidr>(), Err(CidrParseError::NoSlash));
        assert!(matches!(
            "1.2.3.4/24".parse::<Cidr>(),
            Err(CidrParseError::HostBits(_))
        ));
        assert!(matches!(
            "1.2.3.0/33".parse::<Cidr>(),
            Err(CidrParseError::Length(..))
        ));
        assert!(matches!(
            "1.2.3/8".parse::<Cidr>(),
            Err(CidrParseError::Address(_))
        ));
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().expect("zero").to_string(),
            "0.0.0.0/0"
        );
    }
}
