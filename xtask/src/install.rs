//! `cargo xtask install`: the files of a DNS box. The binary under `PREFIX/bin`, the
//! systemd unit, the environment file it reads (`--iface` and the other arguments), and
//! an example config when there is none. An existing config or environment file is
//! never overwritten.
//!
//! Only std and anyhow: `tests/tests/install.rs` includes this file to check the unit
//! with `systemd-analyze verify`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// Where things go.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Prepended to every path below (a staging directory, a test); `/` on a box.
    pub root: PathBuf,
    /// `/usr/local`: the binary goes to `PREFIX/bin/geodns`.
    pub prefix: PathBuf,
    /// `/etc/geodns`: `geodns.toml`, `geodns.env`.
    pub config_dir: PathBuf,
    /// `/etc/systemd/system`.
    pub unit_dir: PathBuf,
}

impl Layout {
    #[must_use]
    pub fn binary(&self) -> PathBuf {
        self.prefix.join("bin/geodns")
    }

    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.config_dir.join("geodns.toml")
    }

    #[must_use]
    pub fn env_file(&self) -> PathBuf {
        self.config_dir.join("geodns.env")
    }

    /// `path` (absolute, on the box) under `root`.
    #[must_use]
    pub fn staged(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// The unit. Runs as root, but with only the capabilities geodns uses (the bounding
/// set drops every other one, file-permission overrides included).
#[must_use]
pub fn unit_text(layout: &Layout) -> String {
    let bin = layout.binary();
    let env = layout.env_file();
    format!(
        r"# geodns: GeoDNS responder; the XDP program answers in the kernel, the rest in userspace.
# Written by `cargo xtask install`. Arguments live in {env}.
[Unit]
Description=geodns GeoDNS responder (XDP)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile={env}
ExecStart={bin} run --config ${{GEODNS_CONFIG}} --iface ${{GEODNS_IFACE}} $GEODNS_ARGS
# Reload the config and the GeoIP databases without a pause.
ExecReload=/bin/kill -HUP $MAINPID
# A restart hands over (sockets, pinned link) from whatever still runs; after a crash
# the pinned XDP program has kept answering meanwhile.
Restart=always
RestartSec=1
# The admin token and the handover socket; kept across restarts.
RuntimeDirectory=geodns
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
StateDirectory=geodns
# Capabilities: only these, instead of full root.
#   CAP_BPF              load the XDP program, create, pin and open its maps and link
#   CAP_PERFMON          the verifier allows the program's pointer arithmetic on map
#                        values and packet data only with it (bpf_capable alone is less)
#   CAP_NET_ADMIN        attach XDP to the interface (bpf_link on a netdev)
#   CAP_NET_BIND_SERVICE bind UDP/TCP port 53
#   CAP_SYS_ADMIN        is NOT needed: systemd mounts /sys/fs/bpf before any unit
CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
# BPF maps are charged to the memory cgroup (kernel 5.11+); older kernels need this.
LimitMEMLOCK=infinity
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
LockPersonality=yes

[Install]
WantedBy=multi-user.target
",
        env = env.display(),
        bin = bin.display(),
    )
}

/// The environment file: the interface and the rest of `geodns run`'s arguments.
#[must_use]
pub fn env_text(layout: &Layout, iface: &str) -> String {
    format!(
        "# Arguments of `geodns run` for geodns.service (see `geodns run --help`).\n\
         GEODNS_CONFIG={}\n\
         GEODNS_IFACE={iface}\n\
         # e.g. --xdp-mode skb --metrics 127.0.0.1:9153 --state-file /var/lib/geodns/states.json\n\
         # --keep-on-exit: `systemctl stop/restart` leaves the XDP program answering (the\n\
         # next start adopts it); without it a stop detaches. Upgrades: `cargo xtask deploy`\n\
         # (or starting the new binary by hand) hand over with no gap at all.\n\
         GEODNS_ARGS=--state-file /var/lib/geodns/states.json\n",
        layout.config().display()
    )
}

/// What [`install_files`] did, one line per file.
pub type Report = Vec<String>;

/// Installs `binary`, the unit, the environment file (with `iface`, unless one exists)
/// and the example config (`example_dir/demo.toml` with its databases and zone file,
/// unless a config exists).
pub fn install_files(
    layout: &Layout,
    binary: &Path,
    example_dir: &Path,
    iface: &str,
) -> Result<Report> {
    let mut report = Report::new();
    let bin = layout.staged(&layout.binary());
    create_parent(&bin)?;
    // Beside it, then renamed: a running daemon's binary is never half written.
    let tmp = bin.with_extension("new");
    fs::copy(binary, &tmp)
        .with_context(|| format!("copying {} to {}", binary.display(), tmp.display()))?;
    fs::rename(&tmp, &bin).with_context(|| format!("renaming {}", tmp.display()))?;
    report.push(format!("installed {}", bin.display()));

    let unit = layout.staged(&layout.unit_dir.join("geodns.service"));
    create_parent(&unit)?;
    fs::write(&unit, unit_text(layout)).with_context(|| format!("writing {}", unit.display()))?;
    report.push(format!("wrote {}", unit.display()));

    let env = layout.staged(&layout.env_file());
    if env.exists() {
        report.push(format!("kept {} (exists)", env.display()));
    } else {
        create_parent(&env)?;
        fs::write(&env, env_text(layout, iface))
            .with_context(|| format!("writing {}", env.display()))?;
        report.push(format!("wrote {}", env.display()));
    }

    let config = layout.staged(&layout.config());
    if config.exists() {
        report.push(format!(
            "kept {} (exists; never overwritten)",
            config.display()
        ));
    } else {
        let dir = config.parent().context("config directory")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for f in ["demo-country.mmdb", "demo-asn.mmdb", "demo.zone"] {
            let to = dir.join(f);
            if !to.exists() {
                fs::copy(example_dir.join(f), &to)
                    .with_context(|| format!("copying the example {f}"))?;
            }
        }
        fs::copy(example_dir.join("demo.toml"), &config)
            .with_context(|| format!("writing the example config {}", config.display()))?;
        report.push(format!(
            "wrote {} (the example config: edit it)",
            config.display()
        ));
    }
    Ok(report)
}

fn create_parent(path: &Path) -> Result<()> {
    let dir = path.parent().context("a parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
