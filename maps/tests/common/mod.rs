//! Helpers shared by the integration tests: a scratch directory, databases written with
//! `mmdb::Writer`, configs around them.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use geodns_maps::{
    mmdb::{Value, Writer},
    Compiled, Config, Engine, NodeStates,
};

/// A directory under the system temp dir, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "geodns-maps-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }

    /// Parses `toml` as if it were `config.toml` in this directory.
    pub fn config(&self, toml: &str) -> Config {
        Config::from_str_named(toml, &self.path("config.toml").display().to_string())
            .unwrap_or_else(|e| panic!("config should parse: {e}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A `MaxMind`-schema record.
pub fn place(country: &str, continent: &str) -> Value {
    Value::map([
        ("continent", Value::map([("code", Value::str(continent))])),
        ("country", Value::map([("iso_code", Value::str(country))])),
    ])
}

pub fn asn_record(asn: u32) -> Value {
    Value::map([("autonomous_system_number", Value::U32(asn))])
}

/// Writes a database from `(network, record)` pairs inserted in order.
pub fn db(scratch: &Scratch, name: &str, ip_version: u8, nets: &[(&str, Value)]) -> PathBuf {
    let mut w = Writer::new(ip_version, "Test").alias_ipv4(ip_version == 6);
    for (net, v) in nets {
        let (a, l) = net.split_once('/').expect("network with a length");
        w.insert(ip(a), l.parse().expect("length"), v)
            .expect("insert network");
    }
    scratch.write(name, &w.to_bytes().expect("serialize database"))
}

/// The zone, nodes and fallback most tests share; `extra` adds geoip, maps, records.
pub fn base_config(extra: &str) -> String {
    format!(
        r#"
[zone]
origin = "cdn.example.net."
ttl = 30
[[zone.ns]]
name = "ns1"
ipv4 = "198.18.0.53"
[[zone.ns]]
name = "ns2.example.org."

[nodes.eu1]
ipv4 = "198.18.1.1"
ipv6 = "2001:2:0:1::1"
weight = 10
[nodes.eu2]
ipv4 = "198.18.1.2"
ipv6 = "2001:2:0:1::2"
weight = 5
[nodes.us1]
ipv4 = ["198.18.2.1", "198.18.2.2"]
ipv6 = "2001:2:0:2::1"
weight = 10
[nodes.us2]
ipv4 = "198.18.2.3"
weight = 10
[nodes.as1]
ipv6 = "2001:2:0:3::1"
[nodes.core1]
ipv4 = "198.18.100.1"
ipv6 = "2001:2:0:100::1"
[nodes.core2]
ipv4 = "198.18.100.2"
ipv6 = "2001:2:0:100::2"

[fallback]
core1 = 3
core2 = 1
{extra}
"#
    )
}

pub fn compile(config: &Config) -> Compiled {
    Compiled::build(config, &mut |_| {}).unwrap_or_else(|e| panic!("compile should succeed: {e}"))
}

pub fn engine(config: Config) -> Engine {
    let compiled = compile(&config);
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
}

pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
