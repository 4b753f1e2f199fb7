//! The IPv6 ranges a database aliases onto its IPv4 tree (IPv4-mapped, 6to4, Teredo):
//! which are live, and cutting the IPv6 partition at their edges.

use std::net::{IpAddr, Ipv6Addr};

use super::{CompileWarning, Rules, Source};
use crate::{cidr::Cidr, partition};

/// The aliases every database has (an IPv4-only database has none), minus those a
/// config CIDR key overlaps (the CIDR would have to win inside the range, which the
/// kernel's translation cannot express); a warning for each alias some database has
/// but that is not live.
pub(super) fn live_aliases(
    sources: &[Source],
    db_aliases: &[u32],
    rules: &Rules,
) -> (u32, Vec<CompileWarning>) {
    let all = db_aliases
        .iter()
        .fold(if db_aliases.is_empty() { 0 } else { u32::MAX }, |a, b| {
            a & b
        });
    let any = db_aliases.iter().fold(0, |a, b| a | b);
    let mut live = 0;
    let mut warnings = Vec::new();
    for (flag, start, len) in geodns_common::IPV6_ALIASES {
        let range = Cidr::new(IpAddr::V6(Ipv6Addr::from(start)), len);
        if any & flag == 0 {
            continue;
        }
        if all & flag == 0 {
            let lacking: Vec<String> = sources
                .iter()
                .zip(db_aliases)
                .filter(|(_, a)| **a & flag == 0)
                .map(|(s, _)| s.path.display().to_string())
                .collect();
            warnings.push(CompileWarning::AliasOff {
                range,
                reason: format!("{} does not alias it to its IPv4 tree", lacking.join(", ")),
            });
            continue;
        }
        let overlap = rules
            .cidrs
            .iter()
            .find(|c| !c.is_ipv4() && (c.contains(range.addr()) || range.contains(c.addr())));
        if let Some(c) = overlap {
            warnings.push(CompileWarning::AliasOff {
                range,
                reason: format!("the config CIDR key {c} overlaps it"),
            });
            continue;
        }
        live |= flag;
    }
    (live, warnings)
}

/// Cuts the prefix that holds each live alias range so the range is a prefix of its
/// own: a prefix around it would claim an ECS scope over addresses that are looked up
/// as IPv4.
pub(super) fn split_at_aliases(v6: &mut Vec<(u128, u8, u16)>, aliases: u32) {
    for (flag, start, len) in geodns_common::IPV6_ALIASES {
        if aliases & flag == 0 {
            continue;
        }
        let end = partition::prefix_end(start, len, 128);
        let i = v6.partition_point(|p| p.0 <= start).saturating_sub(1);
        let Some(&(s, l, region)) = v6.get(i) else {
            continue;
        };
        let e = partition::prefix_end(s, l, 128);
        if s == start && l == len || !(s <= start && end <= e) {
            continue;
        }
        let mut pieces = Vec::new();
        if s < start {
            partition::cover(s, start - 1, 128, |a, b| pieces.push((a, b, region)));
        }
        pieces.push((start, len, region));
        if end < e {
            partition::cover(end + 1, e, 128, |a, b| pieces.push((a, b, region)));
        }
        v6.splice(i..=i, pieces);
    }
}
