//! A fleet for tests: a real etcd (one member, data in a temp dir, killed on drop) and
//! `geodns run --fleet` boxes, on loopback or inside a test namespace.
use std::{
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{
    client::{query_udp, Reply},
    daemon::{geodns_bin, Daemon},
    frame::Query,
};

/// A free TCP port on 127.0.0.1 (also free for UDP), released for the caller to bind.
///
/// Drawn below the kernel's ephemeral range (`ip_local_port_range`): a port the kernel
/// handed out (bind to port 0) is where it also puts the next outgoing connection, so a
/// box's own connection to etcd could take it between this check and the box's bind
/// (seen once: "binding the metrics address"), and above the fixed ports of the tests.
/// Never the same port twice in a process.
#[must_use]
pub fn free_port() -> u16 {
    use std::{
        collections::HashSet,
        hash::{BuildHasher, Hasher},
        sync::Mutex,
    };
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    // Above the fixed ports the fleet tests use (5353, 1915x).
    let low = 20_000u16;
    let span = u64::from(first_ephemeral.saturating_sub(low).max(1));
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let draw = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = low + u16::try_from(draw % span).unwrap_or(0);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            given.insert(port);
            return port;
        }
    }
}

/// `cmd` run in the network namespace `ns` (this one with `None`).
fn in_ns(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// One etcd member on 127.0.0.1 of `ns` (or of this namespace), its data under `dir`.
/// Killed on drop.
pub struct Etcd {
    child: Option<Child>,
    ns: Option<String>,
    data: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd and waits until it answers (`geodns fleet status`), at most 20 s.
    /// Panics, naming the package, when etcd is not installed (`cargo xtask test`
    /// installs Debian's `etcd-server`).
    #[must_use]
    pub fn start(dir: &Path, ns: Option<&str>) -> Self {
        let (client_port, peer_port) = match ns {
            // A fresh namespace has every port free.
            Some(_) => (2379, 2380),
            None => (free_port(), free_port()),
        };
        let mut etcd = Self {
            child: None,
            ns: ns.map(str::to_owned),
            data: dir.join("etcd-data"),
            client_port,
            peer_port,
        };
        etcd.restart();
        etcd
    }

    /// `etcd://127.0.0.1:PORT`, for `--fleet`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (SIGKILL: a crash, as far as the boxes can tell); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data (or the first time).
    pub fn restart(&mut self) {
        self.stop();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let etcd = which_etcd();
        let child = in_ns(self.ns.as_deref(), &etcd)
            .args(["--name", "geodns-test", "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("geodns-test={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", etcd.display()));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let out = fleet_cmd(self.ns.as_deref(), &self.endpoint(), &["status"]);
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "etcd did not answer within 20 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which_etcd() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!("etcd is not installed: `cargo xtask test` installs Debian's etcd-server (apt-get install etcd-server)");
}

/// `geodns fleet ARGS --fleet ENDPOINT` in `ns`.
#[must_use]
pub fn fleet_cmd(ns: Option<&str>, endpoint: &str, args: &[&str]) -> Output {
    in_ns(ns, &geodns_bin())
        .arg("fleet")
        .args(args)
        .args(["--fleet", endpoint])
        .output()
        .expect("run geodns fleet")
}

/// Every box's status from `geodns fleet status --json`.
#[must_use]
pub fn fleet_status(ns: Option<&str>, endpoint: &str) -> Vec<serde_json::Value> {
    let out = fleet_cmd(ns, endpoint, &["status", "--json"]);
    assert!(
        out.status.success(),
        "geodns fleet status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fleet status JSON")
}

/// A `geodns run --no-xdp --fleet` box on loopback, with its own directory (config,
/// databases, admin token).
pub struct FleetBox {
    pub name: String,
    pub dir: PathBuf,
    pub dns: SocketAddr,
    pub api: String,
    /// `None`: a lone box, not in a fleet (the benchmark's baseline).
    endpoint: Option<String>,
    extra: Vec<String>,
    daemon: Option<Daemon>,
}

impl FleetBox {
    /// Copies the files of `from` (a directory with `demo.toml`) into `dir/NAME` and
    /// starts the box with `extra` arguments.
    #[must_use]
    pub fn start(name: &str, from: &Path, dir: &Path, endpoint: &str, extra: &[&str]) -> Self {
        Self::start_with(name, from, dir, Some(endpoint), extra)
    }

    /// The same box outside any fleet.
    #[must_use]
    pub fn lone(name: &str, from: &Path, dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(name, from, dir, None, extra)
    }

    fn start_with(
        name: &str,
        from: &Path,
        dir: &Path,
        endpoint: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let own = dir.join(name);
        std::fs::create_dir_all(&own).expect("box dir");
        for e in std::fs::read_dir(from).expect("read the source dir") {
            let e = e.expect("dir entry");
            if e.path().is_file() {
                std::fs::copy(e.path(), own.join(e.file_name())).expect("copy a file");
            }
        }
        let mut b = Self {
            name: name.to_owned(),
            dir: own,
            dns: SocketAddr::from(([127, 0, 0, 1], free_port())),
            api: format!("127.0.0.1:{}", free_port()),
            endpoint: endpoint.map(str::to_owned),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            daemon: None,
        };
        b.restart();
        b
    }

    /// The box's config file.
    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.dir.join("demo.toml")
    }

    /// Stops the box (SIGTERM, waited for).
    pub fn stop(&mut self) {
        drop(self.daemon.take());
    }

    /// Starts the box (again), with the same ports and files.
    pub fn restart(&mut self) {
        self.stop();
        let dns = self.dns.to_string();
        let token = self.dir.join("token").display().to_string();
        let mut args: Vec<&str> = vec!["--no-xdp", "--listen", &dns, "--admin-token", &token];
        if let Some(endpoint) = &self.endpoint {
            args.extend(["--fleet", endpoint, "--box", &self.name]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        self.daemon = Some(Daemon::start_local(
            &self.config(),
            &self.api,
            &args,
            Duration::from_secs(30),
        ));
    }

    /// `geodns node ARGS` against this box.
    #[must_use]
    pub fn node(&self, args: &[&str]) -> Output {
        Command::new(geodns_bin())
            .arg("node")
            .args(args)
            .args(["--api", &self.api, "--admin-token"])
            .arg(self.dir.join("token"))
            .output()
            .expect("run geodns node")
    }

    /// One UDP query to the box.
    pub fn query(&self, q: &Query, timeout: Duration) -> io::Result<Reply> {
        query_udp(self.dns, q, timeout)
    }

    /// Its `/metrics` page (empty while it does not answer).
    #[must_use]
    pub fn metrics(&self) -> String {
        self.daemon
            .as_ref()
            .and_then(Daemon::scrape_local)
            .unwrap_or_default()
    }
}

/// The query whose answer a node's admin state changes in the demo config: `www` `A`
/// for a client in `198.18.0.0/15`, which only `fra1` serves (drained: the fallback
/// nodes answer).
#[must_use]
pub fn fra1_query() -> Query {
    Query::new("www.cdn.example.net.", 1)
        .edns(1232)
        .ecs("198.18.1.0", 24)
}

/// `fra1`'s address in the demo config.
pub const FRA1: &str = "198.18.1.10";

/// Whether `reply` carries fra1.
#[must_use]
pub fn answers_fra1(reply: &Reply) -> bool {
    reply.addrs.iter().any(|a| a.to_string() == FRA1)
}

/// Runs `geodns node NODE STATE` against `via` and measures, from just before it
/// starts, how long until each of `boxes` answers [`fra1_query`] as `done` says
/// (polled every millisecond, at most `timeout`). Panics when the command fails or a
/// box does not get there in time.
#[must_use]
pub fn admin_propagation(
    via: &FleetBox,
    boxes: &[&FleetBox],
    node: &str,
    state: &str,
    done: impl Fn(&Reply) -> bool,
    timeout: Duration,
) -> Vec<Duration> {
    let q = fra1_query();
    let started = Instant::now();
    let out = std::thread::scope(|s| {
        let cmd = s.spawn(|| via.node(&[node, state]));
        let mut at: Vec<Option<Duration>> = vec![None; boxes.len()];
        while at.iter().any(Option::is_none) && started.elapsed() < timeout {
            for (b, t) in boxes.iter().zip(at.iter_mut()) {
                if t.is_none()
                    && b.query(&q, Duration::from_millis(200))
                        .is_ok_and(|r| done(&r))
                {
                    *t = Some(started.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = cmd.join().expect("geodns node thread");
        assert!(
            out.status.success(),
            "geodns node {node} {state}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        at
    });
    out.into_iter()
        .zip(boxes)
        .map(|(t, b)| {
            t.unwrap_or_else(|| {
                panic!(
                    "box {}: `{node} {state}` not in its answers after {timeout:?}",
                    b.name
                )
            })
        })
        .collect()
}
