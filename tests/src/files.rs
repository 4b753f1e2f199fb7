//! Scratch directories for tests, and copies of the demo config to change.
use std::path::{Path, PathBuf};

/// A directory under the system's temp dir, removed on drop (also when a test panics).
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/geodns-<tag>-<pid>`, created empty.
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("geodns-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        Self(dir)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The committed `examples/` directory.
#[must_use]
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Copies the demo config and its databases into `dir` and returns the config's path.
/// Its health checks are removed: their targets are not on the test hosts, and a node
/// that a check takes down mid-test would change the answers. Response rate limiting
/// is off (`[rrl] rate = 0`): these tests send thousands of queries a second from one
/// address; `demo_with_rrl` keeps it.
#[must_use]
pub fn demo_without_checks(dir: &Path) -> PathBuf {
    let config = demo_with_rrl(dir);
    let text = std::fs::read_to_string(&config).expect("read the copied config");
    let text = rrl_off(&text);
    std::fs::write(&config, text).expect("write the config");
    config
}

/// `text` (the demo config) with `[rrl] rate = 0`.
#[must_use]
pub fn rrl_off(text: &str) -> String {
    let off: String = text
        .lines()
        .map(|l| {
            if l.starts_with("rate = ") {
                "rate = 0"
            } else {
                l
            }
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(
        off.contains("\nrate = 0\n"),
        "the demo config has [rrl] rate"
    );
    off
}

/// As [`demo_without_checks`], with the demo's rate limit.
#[must_use]
pub fn demo_with_rrl(dir: &Path) -> PathBuf {
    for f in ["demo-country.mmdb", "demo-asn.mmdb", "demo.zone"] {
        std::fs::copy(examples().join(f), dir.join(f)).expect("copy a demo database");
    }
    let text = std::fs::read_to_string(examples().join("demo.toml")).expect("read demo.toml");
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("check ="))
        .flat_map(|l| [l, "\n"])
        .collect();
    let config = dir.join("demo.toml");
    std::fs::write(&config, text).expect("write the config");
    config
}

/// Copies `examples/route.toml` (`nearest` and `sticky`) and its databases into `dir`
/// with response rate limiting off, and returns the config's path.
#[must_use]
pub fn route_without_rrl(dir: &Path) -> PathBuf {
    for f in ["route-city.mmdb", "demo-asn.mmdb", "route-rib.mrt"] {
        std::fs::copy(examples().join(f), dir.join(f)).expect("copy a route database");
    }
    let text = std::fs::read_to_string(examples().join("route.toml")).expect("read route.toml");
    let config = dir.join("route.toml");
    std::fs::write(&config, rrl_off(&text)).expect("write the config");
    config
}
