//! Shadow runs (`geodns shadow`): a candidate table in the idle kernel generation,
//! looked up for a sample of the live queries, and what the counts mean.
//!
//! The kernel counts, per (live decision, candidate decision) pair, the queries it
//! shadowed (`SHADOW`, keyed by `geodns_common::shadow_key`: record and region of each
//! side, and the family). This module turns the pairs into answers with each side's
//! engine (`Engine::answer_of`, what `geodns diff` compares too) and sums the queries
//! whose answer differs, per old node(s) -> new node(s).
use std::time::{SystemTime, UNIX_EPOCH};

use geodns_common::{shadow_key_parts, SHADOW_NO_ANSWER};
use geodns_maps::Engine;

use crate::control::ShadowSnapshot;

/// The daemon's sample when none is asked for: one answered query in `2^4`. A
/// shadowed query costs about twice an answer (a second lookup, two tail calls, a
/// per-CPU hash update); one in 16 keeps the mean cost near 1.1x
/// (`xdp_ns_v4_500k_shadow`).
pub const DEFAULT_SAMPLE_EXP: u8 = 4;

/// The pseudo-answer of a query the candidate would not answer in the kernel.
pub const NO_ANSWER: &str = "(no answer)";

/// A shadow run's counts, as `geodns shadow --report` prints them.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The candidate's config.
    pub candidate: String,
    /// One answered query in `2^sample_exp` is shadowed.
    pub sample_exp: u8,
    /// Unix seconds when the counts started (the run, or its last rebuild).
    pub since: u64,
    /// How often a node-state change rebuilt the candidate and restarted the counts.
    pub restarts: u32,
    /// Shadowed queries.
    pub queries: u64,
    /// Of those, the queries whose answer the candidate changes.
    pub changed: u64,
    /// Where they move: old answer's nodes -> new answer's nodes, most queries first.
    pub moves: Vec<Move>,
}

/// Queries that move from one answer to another.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Move {
    /// The nodes of the live answer (`a+b` for a spread), or [`NO_ANSWER`].
    pub from: String,
    /// The nodes of the candidate's answer.
    pub to: String,
    /// `A` or `AAAA`.
    pub family: String,
    pub queries: u64,
}

/// The nodes an engine's answer for (record, region) sends clients to, and its label
/// (what is compared: policy, addresses, weights).
fn answer(engine: &Engine, record: u16, region: u16, v6: bool) -> (String, String) {
    let record = usize::from(record);
    if record >= engine.config().records.len()
        || usize::from(region) >= engine.compiled().region_count()
    {
        return (NO_ANSWER.to_owned(), NO_ANSWER.to_owned());
    }
    let (label, nodes) = engine.answer_of(record, region, v6);
    let names: Vec<&str> = nodes
        .iter()
        .filter_map(|(n, _)| engine.config().nodes.get(*n).map(|n| n.name.as_str()))
        .collect();
    let names = if names.is_empty() {
        NO_ANSWER.to_owned()
    } else {
        names.join("+")
    };
    (label, names)
}

/// The report of `snapshot`.
#[must_use]
pub fn report(snapshot: &ShadowSnapshot) -> Report {
    let mut moves: std::collections::BTreeMap<(String, String, &'static str), u64> =
        std::collections::BTreeMap::new();
    let mut queries = 0;
    let mut changed = 0;
    for &(key, n) in &snapshot.counts {
        let (aaaa, live, candidate) = shadow_key_parts(key);
        queries += n;
        let (old_label, old_nodes) = answer(&snapshot.live, live.0, live.1, aaaa);
        let (new_label, new_nodes) = if candidate.0 == SHADOW_NO_ANSWER {
            (NO_ANSWER.to_owned(), NO_ANSWER.to_owned())
        } else {
            answer(&snapshot.candidate, candidate.0, candidate.1, aaaa)
        };
        if old_label != new_label {
            changed += n;
            let family = if aaaa { "AAAA" } else { "A" };
            *moves.entry((old_nodes, new_nodes, family)).or_default() += n;
        }
    }
    let mut moves: Vec<Move> = moves
        .into_iter()
        .map(|((from, to, family), queries)| Move {
            from,
            to,
            family: family.to_owned(),
            queries,
        })
        .collect();
    moves.sort_by_key(|m| std::cmp::Reverse(m.queries));
    Report {
        candidate: snapshot.source.clone(),
        sample_exp: snapshot.sample_exp,
        since: snapshot
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        restarts: snapshot.restarts,
        queries,
        changed,
        moves,
    }
}

/// `geodns shadow --report` as text.
#[must_use]
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(r.since);
    let share = if r.queries == 0 {
        0.0
    } else {
        #[expect(clippy::cast_precision_loss, reason = "a share")]
        let s = r.changed as f64 / r.queries as f64 * 100.0;
        s
    };
    let _ = writeln!(
        out,
        "shadow of {}: {} queries shadowed in {age} s (one in {}), {} would change ({share:.2}%)",
        r.candidate,
        r.queries,
        1u32 << r.sample_exp,
        r.changed,
    );
    if r.restarts > 0 {
        let _ = writeln!(
            out,
            "  counts restarted {} time(s): node states changed, the candidate was rebuilt",
            r.restarts
        );
    }
    for m in &r.moves {
        let _ = writeln!(
            out,
            "  {:>10}  {:<4} {} -> {}",
            m.queries, m.family, m.from, m.to
        );
    }
    out
}
