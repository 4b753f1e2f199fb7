//! `cargo xtask deploy [user@]HOST`: a built binary (and a config) onto a box over ssh,
//! checked there, then started so that it takes over from the running daemon
//! (`geodns run`'s handover: no query lost).
//!
//! 1. copy the binary (and the config) beside the installed ones (`.new`);
//! 2. `geodns.new compile --config ...` on the box: a failure stops here, nothing changed;
//! 3. the installed files move to `.prev`, the new ones into place;
//! 4. `geodns run` with the arguments of the box's `geodns.env` starts detached, takes
//!    the sockets and the pinned link from the running daemon, which exits;
//! 5. its "geodns ready" log line says version and map generation. If it exits before
//!    that, the `.prev` files go back and the old daemon, which never stopped, serves on.
//!
//! Under systemd the unit's `Restart=always` then starts the unit's own daemon, which
//! takes over from the deployed one the same way (a second seamless handover).
//!
//! Only std and anyhow: `tests/tests/deploy.rs` includes this file and drives it against
//! a real sshd.
use std::{
    ffi::OsString,
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::install::Layout;

/// How to reach the box.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `[user@]host`.
    pub target: String,
    /// The ssh command and its options (e.g. `["ssh", "-i", "key"]`).
    pub ssh: Vec<OsString>,
    /// The scp command and its options.
    pub scp: Vec<OsString>,
}

/// What runs on the box after a deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployed {
    pub pid: u32,
    /// `geodns --version` of the new daemon.
    pub version: String,
    /// The kernel map generation it serves.
    pub generation: u32,
}

/// How long the new daemon may take to be ready (compile, load, handover).
const READY_TIMEOUT: Duration = Duration::from_mins(2);

impl Remote {
    fn command(base: &[OsString]) -> Result<Command> {
        let (program, args) = base.split_first().context("an empty ssh/scp command")?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs `script` with `sh` on the box; its stdout, or an error with its output.
    fn sh(&self, script: &str) -> Result<String> {
        let mut cmd = Self::command(&self.ssh)?;
        cmd.arg(&self.target)
            .arg("sh -s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", self.ssh))?;
        child
            .stdin
            .take()
            .context("ssh stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "on {}: {}{}",
                self.target,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        let mut cmd = Self::command(&self.scp)?;
        cmd.arg("-q")
            .arg(from)
            .arg(format!("{}:{}", self.target, to.display()));
        let out = cmd
            .output()
            .with_context(|| format!("starting {:?}", self.scp))?;
        if !out.status.success() {
            bail!(
                "copying {} to {}:{}: {}",
                from.display(),
                self.target,
                to.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Single-quoted for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn q(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// Deploys `binary` (and `config`) to the box laid out as `layout` (its `root` is
/// ignored: paths are the box's).
pub fn deploy(
    remote: &Remote,
    layout: &Layout,
    binary: &Path,
    config: Option<&Path>,
    iface: Option<&str>,
) -> Result<Deployed> {
    let bin = layout.binary();
    let conf = layout.config();
    let env = layout.env_file();
    let bin_new = bin.with_extension("new");
    let conf_new = conf.with_extension("toml.new");
    remote
        .sh(&format!(
            "set -e; test -f {env} || {{ echo 'no {env}: run `cargo xtask install` on the box first'; exit 1; }}; mkdir -p {dir}",
            env = q(&env),
            dir = q(bin.parent().context("binary directory")?),
        ))
        .context("the box is not installed")?;
    remote.copy(binary, &bin_new)?;
    let check_conf = match config {
        Some(c) => {
            remote.copy(c, &conf_new)?;
            conf_new.clone()
        }
        None => conf.clone(),
    };
    // The check, with the new binary, before anything changes.
    if let Err(e) = remote.sh(&format!(
        "chmod 755 {bn} && {bn} compile --config {cc} >/dev/null",
        bn = q(&bin_new),
        cc = q(&check_conf)
    )) {
        let _ = remote.sh(&format!("rm -f {} {}", q(&bin_new), q(&conf_new)));
        return Err(e).context("the config check failed on the box; nothing was changed");
    }
    let mut swap = format!(
        "set -e; if [ -f {b} ]; then cp -p {b} {b}.prev; fi; mv {bn} {b}",
        b = q(&bin),
        bn = q(&bin_new)
    );
    if config.is_some() {
        let _ = write!(
            swap,
            "; if [ -f {c} ]; then cp -p {c} {c}.prev; fi; mv {cn} {c}",
            c = q(&conf),
            cn = q(&conf_new)
        );
    }
    remote.sh(&swap)?;
    let restore = || {
        let mut script = format!("if [ -f {b}.prev ]; then mv {b}.prev {b}; fi", b = q(&bin));
        if config.is_some() {
            let _ = write!(
                script,
                "; if [ -f {c}.prev ]; then mv {c}.prev {c}; fi",
                c = q(&conf)
            );
        }
        let _ = remote.sh(&script);
    };
    // Started detached from the ssh session; it hands over from the running daemon.
    let iface = iface.map_or_else(|| "$GEODNS_IFACE".to_owned(), quote);
    let started = remote.sh(&format!(
        "set -a; . {env}; set +a\n\
         log=\"${{GEODNS_LOG_DIR:-/var/log/geodns}}/deploy-$(date +%Y%m%dT%H%M%S)-$$.log\"\n\
         mkdir -p \"$(dirname \"$log\")\"\n\
         RUST_LOG=info setsid {b} run --config \"$GEODNS_CONFIG\" --iface {iface} $GEODNS_ARGS </dev/null >\"$log\" 2>&1 &\n\
         echo \"$! $log\"",
        env = q(&env),
        b = q(&bin),
    ));
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            restore();
            return Err(e).context("starting the new daemon");
        }
    };
    let (pid, log) = started
        .trim()
        .split_once(' ')
        .context("the box did not say the new daemon's pid")?;
    let pid: u32 = pid.parse().context("the new daemon's pid")?;
    let ready = wait_ready(remote, pid, log);
    if ready.is_err() {
        restore();
    }
    ready
}

/// Waits for the "geodns ready" line of the daemon `pid` in `log` on the box; an error
/// (with the log's tail) when it exits first or takes too long, after stopping it.
fn wait_ready(remote: &Remote, pid: u32, log: &str) -> Result<Deployed> {
    let since = Instant::now();
    loop {
        let state = remote.sh(&format!(
            "if kill -0 {pid} 2>/dev/null; then echo alive; else echo dead; fi; grep -m1 'geodns ready' {log} || true",
            log = quote(log)
        ))?;
        if let Some(line) = state.lines().find(|l| l.contains("geodns ready")) {
            let version = field(line, "version").unwrap_or_default();
            let generation = field(line, "generation")
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            return Ok(Deployed {
                pid,
                version,
                generation,
            });
        }
        let dead = state.starts_with("dead");
        if dead || since.elapsed() > READY_TIMEOUT {
            let tail = remote
                .sh(&format!("tail -n 20 {}", quote(log)))
                .unwrap_or_default();
            if !dead {
                let _ = remote.sh(&format!("kill {pid}"));
            }
            bail!(
                "the new daemon did not start (log {log} on the box); the previous files are back and the running daemon serves on:\n{tail}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `name=value` or `name="value"` of a tracing log line.
fn field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        Some(quoted[..quoted.find('"')?].to_owned())
    } else {
        Some(rest.split_whitespace().next()?.to_owned())
    }
}
