//! `geodns run` as a child process in a test namespace, and its `/metrics`.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::{NetnsPair, Side};

/// The `geodns` binary cargo built next to the running test or benchmark binary
/// (`target/<profile>/geodns`; tests run from `target/<profile>/deps`).
#[must_use]
pub fn geodns_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("target dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    let bin = dir.join("geodns");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p geodns` (with --release for benchmarks) first",
        bin.display()
    );
    bin
}

/// A running `geodns run`, in the server namespace of `pair` (nsenter switches only
/// the network namespace, so its pins land on the host's BPF filesystem). SIGTERM
/// and a wait on drop.
pub struct Daemon {
    child: Child,
    /// The `/metrics` address inside the server namespace.
    pub metrics: String,
}

impl Daemon {
    /// Starts `geodns run --config CONFIG --iface <server veth> --metrics METRICS
    /// --pin-dir PIN EXTRA...` and waits (up to `timeout`) until `/metrics` answers.
    #[must_use]
    pub fn start(
        pair: &NetnsPair,
        config: &Path,
        metrics: &str,
        pin_dir: &str,
        extra: &[&str],
        timeout: Duration,
    ) -> Self {
        let mut daemon = Self::spawn(&geodns_bin(), pair, config, metrics, pin_dir, extra);
        daemon.wait_ready(timeout, |d| d.scrape(pair));
        daemon
    }

    /// As [`Daemon::start`] with the binary `bin`, not waited for (e.g. a new daemon
    /// taking over from one that still answers `/metrics` on the same address).
    #[must_use]
    pub fn spawn(
        bin: &Path,
        pair: &NetnsPair,
        config: &Path,
        metrics: &str,
        pin_dir: &str,
        extra: &[&str],
    ) -> Self {
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
            .arg(bin)
            .args(["run", "--config"])
            .arg(config)
            .args([
                "--iface",
                &pair.server_if,
                "--metrics",
                metrics,
                "--pin-dir",
                pin_dir,
            ])
            .args(extra)
            // Quiet unless the caller asked for more.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .expect("start geodns run");
        Self {
            child,
            metrics: metrics.to_owned(),
        }
    }

    /// Whether the process has exited (and is reaped).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, as the OOM killer would, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts `geodns run --config CONFIG --metrics METRICS EXTRA...` in this process's
    /// network namespace (for `--no-xdp` servers on loopback) and waits (up to
    /// `timeout`) until `/metrics` answers.
    #[must_use]
    pub fn start_local(config: &Path, metrics: &str, extra: &[&str], timeout: Duration) -> Self {
        let mut daemon = Self::spawn_local("run", config, metrics, extra);
        daemon.wait_ready(timeout, Self::scrape_local);
        daemon
    }

    /// `geodns SUBCOMMAND --config CONFIG --metrics METRICS EXTRA...` in this process's
    /// network namespace, not waited for.
    fn spawn_local(subcommand: &str, config: &Path, metrics: &str, extra: &[&str]) -> Self {
        let child = Command::new(geodns_bin())
            .args([subcommand, "--config"])
            .arg(config)
            .args(["--metrics", metrics])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("start geodns {subcommand}: {e}"));
        Self {
            child,
            metrics: metrics.to_owned(),
        }
    }

    /// Starts `geodns redirect --config CONFIG --metrics METRICS EXTRA...` in this
    /// process's network namespace and waits (up to `timeout`) until its own `/metrics`
    /// answers. [`Daemon::scrape_local`] reads it.
    #[must_use]
    pub fn start_redirect(config: &Path, metrics: &str, extra: &[&str], timeout: Duration) -> Self {
        let mut daemon = Self::spawn_local("redirect", config, metrics, extra);
        // Its own page: another server on that port would answer too.
        daemon.wait_ready(timeout, |d| {
            d.scrape_local()
                .filter(|m| m.contains("geodns_http_requests_total"))
        });
        daemon
    }

    fn wait_ready(&mut self, timeout: Duration, scrape: impl Fn(&Self) -> Option<String>) {
        let started = Instant::now();
        while scrape(self).is_none() {
            // A daemon that exits at start (bad config, Ctrl-C) fails at once, not
            // after the timeout.
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("geodns run exited before serving /metrics: {status}");
            }
            assert!(
                started.elapsed() < timeout,
                "geodns run did not serve /metrics"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, for signals.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `/metrics` page, or `None` while the daemon does not answer.
    #[must_use]
    pub fn scrape(&self, pair: &NetnsPair) -> Option<String> {
        let addr = self.metrics.clone();
        pair.in_ns(Side::Server, move || get_metrics(&addr))
            .ok()
            .flatten()
    }

    /// [`Daemon::scrape`] for a daemon from [`Daemon::start_local`].
    #[must_use]
    pub fn scrape_local(&self) -> Option<String> {
        get_metrics(&self.metrics)
    }
}

fn get_metrics(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: geodns\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Stops a child server: SIGTERM, up to 5 s to exit, then SIGKILL; reaped either way.
pub fn stop_child(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap_or(0), libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The value of the first metric line starting with `name` (0 when absent).
#[must_use]
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// `geodns node ARGS --api API` in `ns` (the host's namespace with `None`): (success,
/// stdout and stderr).
#[must_use]
pub fn node_cmd(ns: Option<&str>, api: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}"))
                .arg(geodns_bin());
            c
        }
        None => Command::new(geodns_bin()),
    };
    let out = cmd
        .arg("node")
        .args(args)
        .args(["--api", api])
        .output()
        .expect("run geodns node");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
