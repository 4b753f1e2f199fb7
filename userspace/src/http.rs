//! The one HTTP layer: every HTTP server of geodns (the redirector, `/metrics` and the
//! admin API) runs on [`serve`] (hyper, HTTP/1.1, bounded), and `geodns node`/`stats`
//! use [`request`]. Also the percent codec and the admin token.
//!
//! # Limits
//!
//! A request head may take at most `header_timeout` to arrive and [`MAX_HEAD_BYTES`] in
//! size with at most [`MAX_HEADERS`] headers (beyond: `431`); a connection, keep-alive
//! included, lives at most `timeout` (it is then closed after the response in flight,
//! which bounds a slow reader too); at most `max_connections` at once (more wait in the
//! kernel's backlog). Request bodies are never read.
//!
//! # The admin token
//!
//! The admin API (`/v1/` on the metrics address) changes what is answered, so loopback
//! alone is not enough: any local user, a container sharing the network namespace, or a
//! web page in a browser on the box (a cross-site `POST`) could reach it. Every `/v1/`
//! request must carry `Authorization: Bearer TOKEN` with the token in `--admin-token`
//! (default `/run/geodns/admin-token`): a file the daemon creates at its first start
//! (mode 0600, in a 0700 directory, 32 random bytes in hex), readable by root only, and
//! read by `geodns node` itself. A request with an `Origin` header comes from a browser
//! and is refused whatever it carries.
use std::{
    convert::Infallible,
    fmt::Write as _,
    future::Future,
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use http_body_util::Full;
use hyper::{
    body::Bytes,
    header::{self, HeaderMap, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

/// Largest request head.
pub const MAX_HEAD_BYTES: usize = 8192;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Time a connection past its `timeout` has to finish the response in flight.
const GRACE: Duration = Duration::from_secs(1);
/// Where the admin token lives unless `--admin-token` says otherwise.
pub const DEFAULT_TOKEN_FILE: &str = "/run/geodns/admin-token";

pub type Body = Full<Bytes>;

/// Bounds of one server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub timeout: Duration,
}

/// A plain-text response.
#[must_use]
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves `listeners` with `handler` (called with each request and its peer) until the
/// runtime stops, within `limits`.
pub fn serve<H, F>(listeners: Vec<TcpListener>, limits: Limits, handler: H)
where
    H: Fn(Request<hyper::body::Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    for listener in listeners {
        let (handler, permits) = (handler.clone(), permits.clone());
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (sock, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::debug!(error = %e, "HTTP accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    connection(sock, peer, limits, handler).await;
                    drop(permit);
                });
            }
        });
    }
}

async fn connection<H, F>(
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: Limits,
    handler: Arc<H>,
) where
    H: Fn(Request<hyper::body::Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let _ = sock.set_nodelay(true);
    let service = service_fn(move |req| {
        let resp = handler(req, peer);
        async move { Ok::<_, Infallible>(resp.await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let conn = builder.serve_connection(TokioIo::new(sock), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = tokio::time::sleep(limits.timeout) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(GRACE, conn).await;
}

/// `%XX` escapes, for node names in paths and query values.
#[must_use]
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved URL characters.
#[must_use]
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The decoded value of `key` in a query string (`a=1&b=2`).
#[must_use]
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// The admin token of a daemon: read from `path`, or created there (see the module
/// doc) when it does not exist yet.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// Reads the token file, creating it first if missing.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match read_token(path) {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .context("reading /dev/urandom")?;
        let mut token = String::with_capacity(64);
        for b in random {
            let _ = write!(token, "{b:02x}");
        }
        // create_new: two daemons starting at once never overwrite each other's token;
        // the loser reads the winner's.
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut f) => {
                f.write_all(format!("{token}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(path = %path.display(), "admin token created");
                Ok(Self(token.into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                read_token(path).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    /// Whether `headers` carry this token as `Authorization: Bearer TOKEN`. Compares
    /// every byte whatever the first difference, so timing tells nothing.
    #[must_use]
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let (a, b) = (given.trim().as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

fn read_token(path: &Path) -> std::io::Result<AdminToken> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    if token.len() < 32 {
        return Err(std::io::Error::other("the token file holds no token"));
    }
    Ok(AdminToken(token.into()))
}

/// Why an admin request is refused before it is looked at, if it is.
#[must_use]
pub fn admin_refusal(token: &AdminToken, headers: &HeaderMap) -> Option<Response<Body>> {
    if headers.contains_key(header::ORIGIN) {
        return Some(text(
            StatusCode::FORBIDDEN,
            "requests from browsers (with an Origin header) are refused\n".to_owned(),
        ));
    }
    if !token.allows(headers) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "the admin API needs `Authorization: Bearer TOKEN` (the daemon's --admin-token file)\n"
                .to_owned(),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(r);
    }
    None
}

/// The client side: one HTTP/1.1 request to a daemon's admin address, with the token
/// from `token_file` when given and readable; the body of a 2xx response, else an
/// error with the body.
pub fn request(
    api: SocketAddr,
    method: &str,
    path: &str,
    token_file: Option<&Path>,
) -> anyhow::Result<String> {
    let auth = match token_file {
        Some(p) => match read_token(p) {
            Ok(t) => format!("Authorization: Bearer {}\r\n", t.0),
            Err(e) => bail!(
                "reading the admin token {}: {e} (run as root, or pass --admin-token)",
                p.display()
            ),
        },
        None => String::new(),
    };
    let mut s = std::net::TcpStream::connect_timeout(&api, Duration::from_secs(3))
        .with_context(|| {
            format!("connecting to {api} (is `geodns run` or `geodns redirect` running with --metrics {api}?)")
        })?;
    // Long enough for a shadow run's compile of a large table on the daemon's side.
    s.set_read_timeout(Some(Duration::from_mins(2)))?;
    // One write: `write!` on the socket would send each piece in a segment of its own.
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {api}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{api} did not answer HTTP"))?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: HTTP {status}: {}", body.trim_end());
    }
    Ok(body.to_owned())
}

/// The `--admin-token` option of the daemons and of `geodns node`/`stats`.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenArgs {
    /// The admin token file: created by the daemon at its first start (root only),
    /// read by `geodns node` and `geodns stats`.
    #[arg(long, default_value = DEFAULT_TOKEN_FILE)]
    pub admin_token: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_survive_the_path() {
        for name in ["fra1", "a b/c%d", "ü"] {
            assert_eq!(percent_decode(&percent_encode(name)), name);
        }
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(
            query_param("ip=1.2.3.4&ecs=1.2.3.0%2F24", "ecs").as_deref(),
            Some("1.2.3.0/24")
        );
    }

    #[test]
    fn the_token_is_created_once_private_and_checked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("geodns-token-{}", std::process::id()));
        let path = dir.join("sub").join("token");
        let a = AdminToken::load_or_create(&path).expect("created");
        let b = AdminToken::load_or_create(&path).expect("read back");
        assert_eq!(a.0, b.0, "a second start reads the same token");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut h = HeaderMap::new();
        assert!(!a.allows(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(!a.allows(&h));
        let good = HeaderValue::from_str(&format!("Bearer {}", a.0)).expect("header");
        h.insert(header::AUTHORIZATION, good);
        assert!(a.allows(&h));
        assert!(admin_refusal(&a, &h).is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(
            admin_refusal(&a, &h).map(|r| r.status()),
            Some(StatusCode::FORBIDDEN),
            "a browser request is refused even with the token"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
