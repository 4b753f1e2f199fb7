//! What the health tests share: loopback check targets (TCP, HTTP, HTTPS) that a test
//! starts, stops and restarts, a config whose nodes are checked against them, and waiting.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    fmt::Write as _,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use geodns::{
    control::EngineHandle,
    health::{HealthArgs, HealthControl},
};
use geodns_maps::{
    AnswerSource, Compiled, Config, Engine, NodeState, NodeStates, Question, Resolution,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    task::JoinHandle,
};

pub const A: &str = "198.18.1.1";
pub const B: &str = "198.18.1.2";
pub const C: &str = "198.18.1.3";
pub const CORE1: &str = "198.18.100.1";
pub const CORE2: &str = "198.18.100.2";
/// A client in the one mapped region (10.0.0.0/8).
pub const CLIENT: &str = "10.1.2.3";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Nodes a, b, c (candidates) and core1, core2 (fallback 2:1); `www` is `best` over
/// { a = 10, b = 5 }, `dl` is `spread` over { a = 3, b = 1, c = 1 }. `checks` gives
/// nodes their `check` target; `extra` is appended to the node tables (e.g. `admin`).
pub fn config_text(checks: &[(&str, String)], extra: &[(&str, &str)]) -> String {
    let node = |name: &str, addr: &str| {
        let check = checks
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| format!("check = \"{t}\"\n"))
            .unwrap_or_default();
        let more =
            extra
                .iter()
                .filter(|(n, _)| *n == name)
                .fold(String::new(), |mut out, (_, line)| {
                    let _ = writeln!(out, "{line}");
                    out
                });
        format!("[nodes.{name}]\nipv4 = \"{addr}\"\n{check}{more}")
    };
    format!(
        r#"
[zone]
origin = "cdn.example.net."
ttl = 30
[[zone.ns]]
name = "ns1.example.org."

{}{}{}{}{}
[maps.main]
"10.0.0.0/8" = {{ a = 10, b = 5 }}

[maps.spread]
"10.0.0.0/8" = {{ a = 3, b = 1, c = 1 }}

[[records]]
name = "www"
map = "main"

[[records]]
name = "dl"
map = "spread"
policy = "spread"

[fallback]
core1 = 2
core2 = 1
"#,
        node("a", A),
        node("b", B),
        node("c", C),
        node("core1", CORE1),
        node("core2", CORE2),
    )
}

pub fn engine(text: &str) -> Engine {
    let config = Config::from_str_named(text, "health-test.toml").expect("test config parses");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("test config compiles");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
}

/// Short intervals for tests: checks every `interval_ms`, rise 2, fall 3.
pub fn args(interval_ms: u64, timeout_ms: u64) -> HealthArgs {
    HealthArgs {
        check_interval: Duration::from_millis(interval_ms),
        check_timeout: Duration::from_millis(timeout_ms),
        rise: 2,
        fall: 3,
        ..HealthArgs::default()
    }
}

/// The userspace decision for `name` (A) from [`CLIENT`]: addresses and source.
pub fn resolve(handle: &EngineHandle, name: &str) -> (Vec<IpAddr>, AnswerSource) {
    match handle.load().resolve(&Question::new(name, 1, ip(CLIENT))) {
        Resolution::Addresses { addrs, source, .. } => (addrs, source),
        other => panic!("{name}: expected addresses, got {other:?}"),
    }
}

pub fn www(handle: &EngineHandle) -> Vec<IpAddr> {
    resolve(handle, "www.cdn.example.net.").0
}

pub fn node_state(control: &HealthControl, node: &str) -> NodeState {
    control
        .status()
        .into_iter()
        .find(|s| s.node == node)
        .expect("node in status")
        .state
}

pub fn checks(control: &HealthControl, node: &str) -> (u64, u64) {
    let s = control
        .status()
        .into_iter()
        .find(|s| s.node == node)
        .expect("node in status");
    (s.checks, s.failed_checks)
}

/// Polls `f` every 5 ms until it holds; panics after `timeout`. Returns the time taken.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Runs `fut` with a hard limit, so a broken test fails instead of hanging.
pub async fn limit<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_mins(1), fut)
        .await
        .expect("test took over a minute")
}

/// A TCP listener on loopback that accepts and closes; stopped, connects are refused.
pub struct TcpTarget {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl TcpTarget {
    pub async fn start() -> Self {
        let mut t = Self {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            accepted: Arc::new(AtomicU64::new(0)),
            task: None,
        };
        t.restart().await;
        t
    }

    pub fn check(&self) -> String {
        self.addr.to_string()
    }

    /// Binds the same address again.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("bind TCP target");
        self.addr = listener.local_addr().expect("local addr");
        let accepted = self.accepted.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                drop(sock);
            }
        }));
    }

    /// Closes the listener (awaited: the port refuses connects when this returns).
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// How an [`HttpTarget`] answers.
pub const HANG: u16 = 0;

/// An HTTP/1.1 server on loopback answering every request with `status` (or never,
/// with [`HANG`]), after `fail_next` answers of 503; optionally over TLS with the
/// fixture certificate.
pub struct HttpTarget {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub fail_next: Arc<AtomicU32>,
    /// Requests answered.
    pub answered: Arc<AtomicU64>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    task: Option<JoinHandle<()>>,
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/health")
        .join(name)
}

impl HttpTarget {
    pub async fn start(status: u16) -> Self {
        Self::start_with(status, None).await
    }

    /// Over TLS with `fixtures/health/node.pem` (signed by `ca.pem`).
    pub async fn start_tls(status: u16) -> Self {
        use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(fixture("node.pem"))
            .expect("node.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("node.pem parses");
        let key = PrivateKeyDer::from_pem_file(fixture("node.key")).expect("node.key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        Self::start_with(
            status,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start_with(status: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let mut t = Self {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            status: Arc::new(AtomicU16::new(status)),
            fail_next: Arc::new(AtomicU32::new(0)),
            answered: Arc::new(AtomicU64::new(0)),
            tls,
            task: None,
        };
        t.restart().await;
        t
    }

    /// The check target: `http://127.0.0.1:PORT/health` (or `https://localhost:PORT/...`).
    pub fn check(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/health", self.addr.port()),
            None => format!("http://{}/health", self.addr),
        }
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind HTTP target");
        self.addr = listener.local_addr().expect("local addr");
        let (status, fail_next, answered, tls) = (
            self.status.clone(),
            self.fail_next.clone(),
            self.answered.clone(),
            self.tls.clone(),
        );
        self.task = Some(tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (status, fail_next, answered, tls) = (
                    status.clone(),
                    fail_next.clone(),
                    answered.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(s) = tls.accept(sock).await {
                                serve(s, &status, &fail_next, &answered).await;
                            }
                        }
                        None => serve(sock, &status, &fail_next, &answered).await,
                    }
                });
            }
        }));
    }

    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve<S>(mut s: S, status: &AtomicU16, fail_next: &AtomicU32, answered: &AtomicU64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(got) => n += got,
        }
    }
    let failing = fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| f.checked_sub(1))
        .is_ok();
    let code = if failing {
        503
    } else {
        status.load(Ordering::Relaxed)
    };
    if code == HANG {
        tokio::time::sleep(Duration::from_hours(1)).await;
        return;
    }
    let resp = format!("HTTP/1.1 {code} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    if s.write_all(resp.as_bytes()).await.is_ok() {
        let _ = s.shutdown().await;
        answered.fetch_add(1, Ordering::Relaxed);
    }
}
