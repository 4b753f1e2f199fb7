//! One check of one node: a TCP connect, or an HTTP(S) `GET` whose status must fall in a
//! range. No state: hysteresis and what a result means live in [`super::book`].
use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::HealthError;

/// Bytes read to find the status line of an HTTP response.
const STATUS_LINE_MAX: usize = 1024;

/// Why one check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("HTTP status {0} outside the expected range")]
    Status(u16),
    #[error("not an HTTP response")]
    BadResponse,
}

/// Accepted HTTP statuses, inclusive: `200-399` or a single `200`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    #[must_use]
    pub fn contains(self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl Default for StatusRange {
    fn default() -> Self {
        Self {
            low: 200,
            high: 399,
        }
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected a status or a range such as 200-399");
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let low: u16 = lo.trim().parse().map_err(|_| bad())?;
        let high: u16 = hi.trim().parse().map_err(|_| bad())?;
        if !(100..=599).contains(&low) || !(low..=599).contains(&high) {
            return Err(bad());
        }
        Ok(Self { low, high })
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// What a check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port`: a TCP connect.
    Tcp { host: String, port: u16 },
    /// `http(s)://host[:port]/path`: a `GET`.
    Http {
        tls: bool,
        /// Without brackets (an IPv6 literal is `::1`).
        host: String,
        port: u16,
        path: String,
        /// As written in the URL (brackets kept), for the `Host` header.
        authority: String,
    },
}

impl Target {
    /// Parses a node's `check` value (the config has validated its form already).
    pub fn parse(text: &str) -> Result<Self, HealthError> {
        let err = |reason| HealthError::Target {
            target: text.to_owned(),
            reason,
        };
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("http://") {
            (false, &t[7..])
        } else if lower.starts_with("https://") {
            (true, &t[8..])
        } else {
            let (host, port) = split_host_port(t).ok_or_else(|| err("expected host:port"))?;
            let port = port.ok_or_else(|| err("expected host:port"))?;
            return Ok(Self::Tcp { host, port });
        };
        let (authority, path) = rest
            .find(['/', '?'])
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err(err("user info in a check URL is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| err("bad host or port"))?;
        Ok(Self::Http {
            tls,
            host,
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            path,
            authority: authority.to_owned(),
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; `None` for an empty host or a bad port.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (host, p) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            _ => (h, Some(port(after.strip_prefix(':')?)?)),
        }
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 literal: no port.
        (s, None)
    } else if let Some((h, p)) = s.rsplit_once(':') {
        (h, Some(port(p)?))
    } else {
        (s, None)
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), p))
}

/// How a check is run; shared by every node's task.
#[derive(Clone)]
pub struct Probe {
    pub timeout: Duration,
    pub status: StatusRange,
    tls: tokio_rustls::TlsConnector,
    /// The `User-Agent` of HTTP checks.
    agent: String,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("timeout", &self.timeout)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// With the Mozilla roots plus the certificates of `extra_ca` (PEM) for HTTPS.
    pub fn new(
        timeout: Duration,
        status: StatusRange,
        extra_ca: Option<&Path>,
    ) -> Result<Self, HealthError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_ca {
            use rustls::pki_types::{pem::PemObject as _, CertificateDer};
            let ca_err = |reason: String| HealthError::CaFile {
                path: path.to_path_buf(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate in the file".to_owned()));
            }
            for c in certs {
                roots.add(c).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HealthError::CaFile {
            path: extra_ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            timeout,
            status,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            agent: "geodns-health".to_owned(),
        })
    }

    /// HTTP checks name the box in their `User-Agent` (`geodns-health (box NAME)`), so
    /// a node's logs tell which box of a fleet saw it fail.
    #[must_use]
    pub fn with_box(mut self, name: &str) -> Self {
        self.agent = format!("geodns-health (box {name})");
        self
    }

    /// One check of `target`, within the timeout.
    pub async fn check(&self, target: &Target) -> Result<(), ProbeError> {
        tokio::time::timeout(self.timeout, self.check_inner(target))
            .await
            .unwrap_or(Err(ProbeError::Timeout))
    }

    async fn check_inner(&self, target: &Target) -> Result<(), ProbeError> {
        match target {
            Target::Tcp { host, port } => {
                TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(ProbeError::Connect)?;
                Ok(())
            }
            Target::Http {
                tls,
                host,
                port,
                path,
                authority,
            } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(ProbeError::Connect)?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                    self.agent
                );
                let status = if *tls {
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| ProbeError::Tls(std::io::Error::other(e)))?;
                    let mut s = self.tls.connect(name, tcp).await.map_err(ProbeError::Tls)?;
                    http_status(&mut s, &request).await?
                } else {
                    let mut s = tcp;
                    http_status(&mut s, &request).await?
                };
                if self.status.contains(status) {
                    Ok(())
                } else {
                    Err(ProbeError::Status(status))
                }
            }
        }
    }
}

/// Sends `request` and reads the status code of the response's status line.
async fn http_status<S>(s: &mut S, request: &str) -> Result<u16, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    let mut buf = [0u8; STATUS_LINE_MAX];
    let mut n = 0;
    loop {
        if let Some(end) = buf[..n].iter().position(|b| *b == b'\n') {
            return parse_status_line(&buf[..end]).ok_or(ProbeError::BadResponse);
        }
        if n == buf.len() {
            return Err(ProbeError::BadResponse);
        }
        let got = s.read(&mut buf[n..]).await.map_err(ProbeError::Io)?;
        if got == 0 {
            return parse_status_line(&buf[..n]).ok_or(ProbeError::BadResponse);
        }
        n += got;
    }
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("198.18.2.10:80").expect("tcp"),
            Target::Tcp {
                host: "198.18.2.10".into(),
                port: 80
            }
        );
        assert_eq!(
            Target::parse("[2001:db8::1]:8080").expect("tcp v6"),
            Target::Tcp {
                host: "2001:db8::1".into(),
                port: 8080
            }
        );
        assert_eq!(
            Target::parse("http://198.18.1.10/health").expect("http"),
            Target::Http {
                tls: false,
                host: "198.18.1.10".into(),
                port: 80,
                path: "/health".into(),
                authority: "198.18.1.10".into(),
            }
        );
        assert_eq!(
            Target::parse("HTTPS://[::1]:8443?x=1").expect("https"),
            Target::Http {
                tls: true,
                host: "::1".into(),
                port: 8443,
                path: "/?x=1".into(),
                authority: "[::1]:8443".into(),
            }
        );
        assert_eq!(
            Target::parse("https://node.example").expect("https default port"),
            Target::Http {
                tls: true,
                host: "node.example".into(),
                port: 443,
                path: "/".into(),
                authority: "node.example".into(),
            }
        );
        for bad in [
            "host",
            "host:0",
            "host:99999",
            ":80",
            "http://:80/",
            "http://u@h/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines_and_ranges() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK"), None);
        let r: StatusRange = "200-399".parse().expect("range");
        assert!(r.contains(200) && r.contains(399) && !r.contains(400));
        assert_eq!(
            "204".parse::<StatusRange>(),
            Ok(StatusRange {
                low: 204,
                high: 204
            })
        );
        assert!("399-200".parse::<StatusRange>().is_err());
        assert!("abc".parse::<StatusRange>().is_err());
    }
}
