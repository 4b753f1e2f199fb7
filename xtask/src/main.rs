//! `cargo xtask`: set up the eBPF toolchain, build, lint, test, run, demo, fuzz, bench.
//!
//! Every command that builds runs `setup` first (idempotent, fast when done), so a
//! newcomer on a fresh machine needs nothing but `cargo xtask demo` / `cargo xtask test`.
mod bench;
mod setup;

use std::{
    env,
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use setup::{setup, Toolchain};

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
        /// Extra arguments for the test binaries (e.g. a test name filter).
        args: Vec<String>,
    },
    /// Build and run geodns with the given arguments: `cargo xtask run -- --help`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the demo: XDP answering geo queries between two network namespaces.
    Demo,
    /// Fuzz a target of fuzz/ with cargo-fuzz on nightly (installed on first use).
    Fuzz {
        #[arg(default_value = "query")]
        target: String,
        /// `libFuzzer`'s `-max_total_time`.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Benchmarks; figures go to target/bench/results.json. Names select a subset.
    ///
    /// With `--compare REF`, the same figures are measured for REF too (a git ref: its
    /// benchmark binaries are built in a worktree under target/bench/compare; or a saved
    /// results.json), alternating old and new for `--rounds` rounds, and each figure is
    /// printed with both medians, their spreads and the new/old ratio.
    Bench {
        names: Vec<String>,
        /// A git ref (commit, branch, tag) or a results.json to compare against.
        #[arg(long, value_name = "REF")]
        compare: Option<String>,
        /// Rounds of each side with --compare (old and new alternate).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    env::set_current_dir(&root)?;
    match cli.command {
        Task::Setup => setup().map(|_| ()),
        Task::Build { release } => {
            let tc = setup()?;
            let mut cmd = cargo(&tc.path, &["build", "-p", "geodns"]);
            if release {
                cmd.arg("--release");
            }
            run(&mut cmd)
        }
        Task::Lint => lint(&setup()?.path),
        Task::Test { args } => {
            let tc = setup()?;
            lint(&tc.path)?;
            test(&tc.path, &root, &args)
        }
        Task::Run { args } => {
            let tc = setup()?;
            let mut cmd = cargo(&tc.path, &["run", "--release", "-p", "geodns", "--"]);
            cmd.args(args);
            run(&mut cmd)
        }
        Task::Demo => {
            let tc = setup()?;
            require_root("the demo creates network namespaces and attaches XDP")?;
            demo(&tc.path)
        }
        Task::Fuzz { target, seconds } => fuzz(&setup()?, &root, &target, seconds),
        Task::Bench {
            names,
            compare,
            rounds,
        } => {
            let tc = setup()?;
            require_root("the benchmarks run BPF programs")?;
            match compare {
                None => bench::bench(&tc.path, &root, &names),
                Some(reference) => bench::compare(&tc.path, &root, &names, &reference, rounds),
            }
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

/// The stable cargo that runs xtask, with the toolchain's PATH.
fn cargo(path: &OsString, args: &[&str]) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).env("PATH", path);
    cmd
}

/// Nightly's cargo (`cargo +nightly`): `$CARGO` is the stable toolchain's own binary,
/// which knows no `+nightly`, so go through rustup.
fn nightly_cargo(path: &OsString, args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"])
        .args(args)
        .env("PATH", path);
    cmd
}

fn is_root() -> Result<bool> {
    Ok(output(Command::new("id").arg("-u"))?.trim() == "0")
}

fn require_root(why: &str) -> Result<()> {
    if !is_root()? {
        bail!("run as root: {why}");
    }
    Ok(())
}

fn lint(path: &OsString) -> Result<()> {
    run(&mut cargo(path, &["fmt", "--all", "--check"])).context("run `cargo fmt --all`")?;
    // xdp-dns only builds for the BPF target: linted there, below. (ebpf-panic is its
    // panic handler, which a host build would see twice.)
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
    // Clippy on the BPF target itself; --release shares the profile (and so the
    // compiled `core`) with the build that userspace/build.rs runs.
    run(&mut nightly_cargo(
        path,
        &[
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
        ],
    ))
}

/// The test binaries append one line per privileged test here (see
/// `geodns_tests::require_bpf`): cargo counts a skipped test as passed.
const PRIVILEGED_LOG: &str = "target/privileged-tests.log";

fn test(path: &OsString, root: &Path, extra: &[String]) -> Result<()> {
    let required = env::var("GEODNS_REQUIRE_BPF").as_deref() == Ok("1");
    if !is_root()? {
        eprintln!(
            "test: not root, so the BPF and netns tests {}",
            if required {
                "will fail (GEODNS_REQUIRE_BPF=1)"
            } else {
                "will skip"
            }
        );
    }
    setup::ensure_test_tools()?;
    // The daemon tests start the `geodns` binary itself: build it first.
    run(&mut cargo(path, &["build", "-p", "geodns"]))?;
    let log = root.join(PRIVILEGED_LOG);
    if log.exists() {
        fs::remove_file(&log)?;
    }
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
    cmd.env("GEODNS_PRIVILEGED_LOG", &log);
    // Forward cargo's output and add the totals at the end, so a reader (and CI) sees
    // at once how many tests ran, not the last binary's count.
    cmd.stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    let privileged = fs::read_to_string(&log).unwrap_or_default();
    let ran = privileged.lines().filter(|l| l.starts_with("ran ")).count();
    let skipped: Vec<&str> = privileged
        .lines()
        .filter(|l| l.starts_with("skipped "))
        .collect();
    println!(
        "privileged tests (BPF_PROG_TEST_RUN, netns/veth): {ran} ran, {} skipped",
        skipped.len()
    );
    for s in &skipped {
        println!("  {s}");
    }
    // Last, in the plain form CI reads: "N passed, N failed, N skipped". A skipped
    // privileged test returned early, so libtest counted it as passed: move it over.
    let skipped_n = skipped.len() as u64;
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed.saturating_sub(skipped_n),
        totals.failed,
        totals.ignored + skipped_n
    );
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    // A filter may select none; an unfiltered CI run that ran none is broken.
    if required && extra.is_empty() && ran == 0 {
        bail!("GEODNS_REQUIRE_BPF=1 but no privileged test ran");
    }
    Ok(())
}

/// Sums libtest's `test result:` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// `test result: ok. 9 passed; 0 failed; 1 ignored; 0 measured; ...`
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }
}

/// The demo binary (`tests/src/bin/demo.rs`) starts the release `geodns` next to
/// itself; both are built first so the demo's own output is not mixed with cargo's.
fn demo(path: &OsString) -> Result<()> {
    run(&mut cargo(
        path,
        &[
            "build",
            "--release",
            "-p",
            "geodns",
            "-p",
            "geodns-tests",
            "--bin",
            "geodns",
            "--bin",
            "demo",
        ],
    ))?;
    run(&mut cargo(
        path,
        &["run", "--release", "-p", "geodns-tests", "--bin", "demo"],
    ))
}

/// Installs cargo-fuzz into the toolchain root on first use, then runs `target` of
/// fuzz/ for `seconds`. New inputs go to `fuzz/corpus/TARGET` (not in git); the seeds
/// are `target/fuzz-seeds/TARGET`, which the handler's unit tests write (run here
/// first when missing).
fn fuzz(tc: &Toolchain, root: &Path, target: &str, seconds: u32) -> Result<()> {
    if !tc.root.join("bin/cargo-fuzz").is_file() {
        eprintln!("fuzz: installing cargo-fuzz into {}", tc.root.display());
        let mut install = cargo(&tc.path, &["install", "--locked", "cargo-fuzz"]);
        install.arg("--root").arg(&tc.root);
        run(&mut install).context("installing cargo-fuzz")?;
    }
    let dir = root.join("fuzz");
    if !dir.is_dir() {
        bail!("no fuzz/ directory");
    }
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let seeds = target_dir.join("fuzz-seeds").join(target);
    let seed_test = match target {
        "query" => Some("authoritative::tests::write_fuzz_seeds"),
        "update" => Some("authoritative::update::tests::write_fuzz_seeds"),
        _ => None,
    };
    if let Some(test) = seed_test {
        if fs::read_dir(&seeds).map_or(true, |mut d| d.next().is_none()) {
            eprintln!("fuzz: writing the seed corpus with the handler's unit tests");
            run(&mut cargo(
                &tc.path,
                &["test", "-p", "geodns", "--lib", "--", test],
            ))?;
        }
    }
    let corpus = dir.join("corpus").join(target);
    fs::create_dir_all(&corpus)?;
    let mut cmd = nightly_cargo(&tc.path, &["fuzz", "run", target]);
    cmd.arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--").arg(format!("-max_total_time={seconds}"));
    run(cmd.current_dir(root))
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_sum_libtest_result_lines() {
        let mut t = Totals::default();
        for line in [
            "test result: ok. 9 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "running 2 tests",
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 3 filtered out; finished in 1.51s",
        ] {
            t.add(line);
        }
        assert_eq!((t.passed, t.failed, t.ignored), (10, 2, 1));
    }
}
