//! What a compile reports: counts per family, warnings, and the facts behind one address.

use std::{path::PathBuf, time::Duration};

use crate::cidr::Cidr;

/// Counts of one address family.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct FamilyStats {
    /// Networks read from the databases (each database counted).
    pub networks: u64,
    /// Prefixes needed without merging: every piece of the overlaid databases and
    /// config CIDRs, gaps included, cut into prefixes.
    pub prefixes_before: u64,
    /// Prefixes after merging: what the kernel map holds.
    pub prefixes_after: u64,
}

/// What [`Compiled::build`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct CompileStats {
    pub v4: FamilyStats,
    pub v6: FamilyStats,
    /// Regions, region 0 included.
    pub regions: usize,
    /// Database files read.
    pub databases: Vec<PathBuf>,
    /// What the BGP RIB dumps gave (`[bgp]`).
    pub bgp: Option<crate::bgp::BgpStats>,
    pub elapsed: Duration,
}

/// A table that lost too much against the one it would replace: what shrank, from
/// what to what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} would drop from {old} to {new}")]
pub struct Shrink {
    pub what: &'static str,
    pub old: u64,
    pub new: u64,
}

impl CompileStats {
    /// `Some` when `self` has lost more than `max_drop` (a share, 0 to 1) of the
    /// database networks or of the regions of `old`: an empty or truncated database
    /// that still parses.
    #[must_use]
    pub fn shrink_from(&self, old: &Self, max_drop: f64) -> Option<Shrink> {
        let networks = |s: &Self| s.v4.networks + s.v6.networks;
        let regions = |s: &Self| s.regions as u64;
        let bgp = |s: &Self| s.bgp.as_ref().map_or(0, crate::bgp::BgpStats::prefixes);
        [
            ("database networks", networks(old), networks(self)),
            ("BGP prefixes", bgp(old), bgp(self)),
            ("regions", regions(old), regions(self)),
        ]
        .into_iter()
        .find(|&(_, o, n)| {
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let lost = o.saturating_sub(n) as f64 / o.max(1) as f64;
            lost > max_drop
        })
        .map(|(what, old, new)| Shrink { what, old, new })
    }
}

/// Something legal but probably unintended in the compiled result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileWarning {
    #[error(
        "{count} region(s) get no candidate from any record's map (their clients get the fallback), e.g. {examples}"
    )]
    UncoveredRegions { count: usize, examples: String },
    #[error("{range} is not looked up as IPv4 (clients there get the IPv6 table): {reason}")]
    AliasOff { range: Cidr, reason: String },
}

/// The prefix that matches an address, and its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixMatch {
    pub prefix: Cidr,
    pub region: u16,
}

/// What the databases and the config's CIDR keys say about one address.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct AddressFacts {
    /// Some database has a network with data for it.
    pub in_database: bool,
    pub country: Option<String>,
    pub continent: Option<String>,
    pub asn: Option<u32>,
    /// Latitude and longitude in degrees (from a City database), as compiled (to
    /// 1e-4 degrees).
    pub location: Option<(f64, f64)>,
    /// The longest BGP prefix holding it (`[bgp]`): its origin and how many peers agree.
    pub bgp: Option<crate::bgp::BgpMatch>,
    /// The innermost config CIDR key (of any map) containing it.
    pub cidr: Option<Cidr>,
    /// Each database that has it, with the network that matched.
    pub networks: Vec<(PathBuf, Cidr)>,
}
