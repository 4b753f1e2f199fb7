//! `cargo xtask setup`: nightly's `rust-src` and a `bpf-linker` built against nightly's
//! own libLLVM, installed under [`toolchain_root`]. `userspace/build.rs` looks for
//! bpf-linker in the same place; keep the two in sync.
//!
//! bpf-linker must link the very LLVM that nightly's rustc emits bitcode for, so it is
//! built from crates.io against nightly's `lib/libLLVM.so.NN*` (through a prefix
//! directory of symlinks, `LLVM_PREFIX`). A stamp records which LLVM file and which
//! bpf-linker version that was; setup is a no-op while both still match, and rebuilds
//! when a nightly update brings another LLVM.
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, output, run};

/// What the commands after setup need.
pub struct Toolchain {
    /// Where setup installs (bpf-linker, cargo-fuzz): `<root>/bin`.
    pub root: PathBuf,
    /// PATH for the builds xtask starts: `<root>/bin` first.
    pub path: OsString,
}

/// `${XDG_DATA_HOME:-$HOME/.local/share}/geodns/toolchain`.
pub fn toolchain_root() -> Result<PathBuf> {
    let data = match env::var_os("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".local/share"),
    };
    Ok(data.join("geodns/toolchain"))
}

const INSTALL_NIGHTLY: &str = "rustup toolchain install nightly --component rust-src";

/// Makes sure nightly with rust-src and a matching bpf-linker exist. Prints how long
/// that took, whether or not there was anything to do.
pub fn setup() -> Result<Toolchain> {
    let started = Instant::now();
    let root = toolchain_root()?;
    let bin = root.join("bin");
    let path = {
        let mut paths = vec![bin.clone()];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        env::join_paths(paths)?
    };
    let toolchain = Toolchain {
        root: root.clone(),
        path,
    };
    ensure_protoc()?;
    let lib = nightly_with_rust_src()?;
    let llvm = nightly_llvm(&lib)?;
    let major = llvm_major(&llvm)?;
    let linker = bin.join("bpf-linker");
    let stamp_path = root.join("stamp");
    let stamp = |version: &str| format!("{llvm} llvm-{major} {version}\n");

    let current = linker_version(&linker);
    if let Some(version) = &current {
        if fs::read_to_string(&stamp_path).ok() == Some(stamp(version)) {
            eprintln!(
                "setup: ready in {:.1}s ({version}, built against nightly's {llvm})",
                started.elapsed().as_secs_f64()
            );
            return Ok(toolchain);
        }
    }
    eprintln!(
        "setup: building bpf-linker against nightly's LLVM {major} ({llvm}; {}); takes about a minute",
        match current {
            Some(v) => format!("its stamp does not name the installed {v} and this LLVM"),
            None => "none installed yet".into(),
        }
    );
    // The prefix bpf-linker's build script links against; the binary keeps an rpath
    // to prefix/lib, so the symlinks must stay.
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
        &toolchain.path,
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
    let version = linker_version(&linker)
        .with_context(|| format!("the new {} does not run", linker.display()))?;
    fs::write(&stamp_path, stamp(&version))?;
    eprintln!(
        "setup: done in {:.1}s ({version} in {})",
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    Ok(toolchain)
}

/// Checks for rustup and nightly, adds `rust-src` when it is missing, and returns
/// nightly's `lib` directory.
fn nightly_with_rust_src() -> Result<PathBuf> {
    if Command::new("rustup").arg("--version").output().is_err() {
        bail!("rustup not found. Install it (https://rustup.rs), then run:\n  {INSTALL_NIGHTLY}");
    }
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "the eBPF program builds with a nightly toolchain, and none is installed. Run:\n  \
             {INSTALL_NIGHTLY}"
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
        ]))
        .context(format!("adding rust-src failed; run `{INSTALL_NIGHTLY}`"))?;
    }
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    Ok(Path::new(sysroot.trim()).join("lib"))
}

/// The file name of nightly's libLLVM, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn nightly_llvm(lib: &Path) -> Result<String> {
    fs::read_dir(lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "nightly has no libLLVM.so.* in {}: reinstall it with \
                 `rustup toolchain install nightly --force --component rust-src`",
                lib.display()
            )
        })
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> `22`.
fn llvm_major(file_name: &str) -> Result<String> {
    let major: String = file_name
        .strip_prefix("libLLVM.so.")
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if major.is_empty() {
        bail!("cannot read the LLVM major version from {file_name}");
    }
    Ok(major)
}

/// `bpf-linker --version` (e.g. `bpf-linker 0.9.15`), or `None` when it does not run
/// (missing, or its libLLVM is gone).
fn linker_version(linker: &Path) -> Option<String> {
    let out = Command::new(linker).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `protoc` (Debian's protobuf-compiler): the etcd client's build compiles etcd's
/// gRPC definitions with it. Installed when missing and running as root; otherwise
/// the build says what is missing.
fn ensure_protoc() -> Result<()> {
    if Command::new("protoc").arg("--version").output().is_ok() {
        return Ok(());
    }
    if !crate::is_root()? {
        eprintln!("setup: protoc missing and this is not root: install protobuf-compiler");
        return Ok(());
    }
    eprintln!("setup: installing protobuf-compiler (protoc, for the etcd client's build)");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "protobuf-compiler"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing protobuf-compiler")
}

/// Debian packages the tests drive as real clients and servers: `nsupdate`
/// (bind9-dnsutils) for the RFC 2136 test; `kxdpgun` (knot-dnsutils) for the flood
/// test; `pebble` (Let's Encrypt's test ACME server), `lego` and `openssl` for the offline DNS-01 certificate test; `systemd-analyze` (the
/// unit check of `cargo xtask install`) and `sshd`/`ssh` (the box of `cargo xtask
/// deploy`'s test; systemd itself need not run); `etcd` (etcd-server) for the fleet
/// tests and benchmark. Installed when missing
/// and running as root (the privileged tests need root anyway); otherwise those tests
/// say what is missing.
pub fn ensure_test_tools() -> Result<()> {
    let has = |tool: &str, arg: &str| std::process::Command::new(tool).arg(arg).output().is_ok();
    let wanted = [
        ("nsupdate", "-V", "bind9-dnsutils"),
        ("kxdpgun", "--version", "knot-dnsutils"),
        ("pebble", "-version", "pebble"),
        ("lego", "--version", "lego"),
        ("openssl", "version", "openssl"),
        ("systemd-analyze", "--version", "systemd"),
        ("/usr/sbin/sshd", "-?", "openssh-server"),
        ("ssh", "-V", "openssh-client"),
        ("etcd", "--version", "etcd-server"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(tool, arg, _)| !has(tool, arg))
        .map(|(_, _, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root()? {
        eprintln!("setup: {missing:?} missing and this is not root: not installing them");
        return Ok(());
    }
    eprintln!("setup: installing {missing:?} (real DNS and ACME clients for the tests)");
    run(std::process::Command::new("apt-get").args(["update", "-q"]))?;
    run(std::process::Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {missing:?}"))
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn llvm_major_from_file_name() {
        assert_eq!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly").expect("major"),
            "22"
        );
        assert_eq!(llvm_major("libLLVM.so.9").expect("major"), "9");
        assert!(llvm_major("libLLVM.so.rust").is_err());
        assert!(llvm_major("libLLVM-22.so").is_err());
    }
}
