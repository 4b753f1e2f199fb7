//! Builds `xdp-dns` for the BPF target with `aya_build` and checks that the object holds
//! every program and map the loader expects (a broken BPF build must not produce a
//! binary that only fails at run time).
use std::{env, path::PathBuf};

use anyhow::{bail, Context as _};

use geodns_common as common;

/// Where `cargo xtask setup` installs bpf-linker (kept in sync with xtask/src/setup.rs).
fn toolchain_bin() -> Option<PathBuf> {
    let data = env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("geodns/toolchain/bin"))
}

fn main() -> anyhow::Result<()> {
    // Let a plain `cargo build` find the bpf-linker that `cargo xtask setup` built.
    if let Some(bin) = toolchain_bin() {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths: Vec<PathBuf> = env::split_paths(&path).collect();
        if !paths.contains(&bin) {
            paths.insert(0, bin);
            // SAFETY: build scripts are single-threaded at this point.
            unsafe { env::set_var("PATH", env::join_paths(paths)?) };
        }
    }
    if which_bpf_linker().is_none() && env::var_os("AYA_BUILD_SKIP").is_none() {
        bail!("bpf-linker not found: run `cargo xtask setup` (it builds bpf-linker against nightly's LLVM)");
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = root.join("../xdp-dns");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "xdp-dns",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let objects = [
        (
            out_dir.join("xdp-dns"),
            common::PROGRAM_NAMES,
            common::MAP_NAMES,
        ),
        (
            out_dir.join("xdp-bench"),
            common::BENCH_PROGRAM_NAMES,
            &[][..],
        ),
    ];
    if env::var_os("AYA_BUILD_SKIP").is_some() {
        // Host-only builds (e.g. clippy on a machine without the eBPF toolchain) get
        // empty objects; loading one fails with a clear error at run time.
        for (out, ..) in &objects {
            if !out.exists() {
                std::fs::write(out, [])?;
            }
        }
        return Ok(());
    }
    for (out, programs, maps) in &objects {
        check_object(out, programs, maps)?;
    }
    Ok(())
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|p| p.join("bpf-linker"))
        .find(|p| p.is_file())
}

#[path = "src/object_check.rs"]
mod object_check;

/// Fails the build if a program or map the loader expects is missing from the object.
fn check_object(path: &std::path::Path, programs: &[&str], maps: &[&str]) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let missing = object_check::missing(&data, maps, programs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !missing.is_empty() {
        bail!(
            "the eBPF object {} lacks what the loader expects: {} (is a map or program renamed in xdp-dns/src/main.rs but not in common::MAP_NAMES/PROGRAM_NAMES?)",
            path.display(),
            missing.join(", ")
        );
    }
    println!(
        "cargo:warning=eBPF object checked: {} bytes, {} maps, {} programs",
        data.len(),
        maps.len(),
        programs.len()
    );
    Ok(())
}
