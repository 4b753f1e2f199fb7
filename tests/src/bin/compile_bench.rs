//! Compile benchmark: a synthetic country + ASN database of N networks (generated, no
//! download), compiled by maps/ as `geodns compile` does, in a process of its own so
//! the peak RSS is the compile's alone.
//!
//! `compile_bench gen DIR [NETWORKS]` writes DIR/bench.mmdb and DIR/bench.toml;
//! `compile_bench run DIR` compiles them and prints one JSON object of figures.
use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use geodns_maps::{mmdb::synth, Compiled, Config};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

const CONFIG: &str = r#"
[zone]
origin = "cdn.example.net."
[[zone.ns]]
name = "ns1.example.org."
[nodes.a]
ipv4 = "198.18.1.1"
[nodes.b]
ipv4 = "198.18.1.2"
[geoip]
country = "bench.mmdb"
asn = "bench.mmdb"
country_field = "country.iso_code"
[maps.main]
"continent:EU" = ["a"]
"continent:NA" = ["b"]
"AA" = ["a"]
"AB" = ["b"]
"AS1000" = ["a"]
default = ["a", "b"]
[[records]]
name = "www"
map = "main"
[fallback]
a = 1
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: compile_bench gen DIR [NETWORKS] | compile_bench run DIR";
    let dir = PathBuf::from(args.get(2).expect(usage));
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let n: usize = args
                .get(3)
                .map_or(500_000, |s| s.parse().expect("NETWORKS"));
            std::fs::create_dir_all(&dir).expect("create dir");
            let t = Instant::now();
            let (mut w, stats) = synth::country_asn(n, 0x6E0D).expect("generate");
            w.write_to(&dir.join("bench.mmdb")).expect("write mmdb");
            std::fs::write(dir.join("bench.toml"), CONFIG).expect("write config");
            eprintln!(
                "generated {} IPv4 + {} IPv6 networks in {:.1}s",
                stats.networks_v4,
                stats.networks_v6,
                t.elapsed().as_secs_f64()
            );
        }
        Some("run") => {
            let config = Config::from_path(&dir.join("bench.toml")).expect("config");
            let t = Instant::now();
            let compiled = Compiled::build(&config, &mut |_| {}).expect("compile");
            let seconds = t.elapsed().as_secs_f64();
            let s = compiled.stats();
            let mut out = BTreeMap::new();
            #[expect(clippy::cast_precision_loss, reason = "counts")]
            {
                out.insert("compile_networks", (s.v4.networks + s.v6.networks) as f64);
                out.insert("compile_prefixes_v4", s.v4.prefixes_after as f64);
                out.insert("compile_prefixes_v6", s.v6.prefixes_after as f64);
                out.insert("compile_prefixes_before_v4", s.v4.prefixes_before as f64);
                out.insert("compile_prefixes_before_v6", s.v6.prefixes_before as f64);
                out.insert(
                    "compile_networks_per_second",
                    (s.v4.networks + s.v6.networks) as f64 / seconds,
                );
            }
            out.insert("compile_seconds", seconds);
            out.insert("compile_peak_rss_mib", peak_rss_mib());
            println!("{}", serde_json::to_string(&out).expect("json"));
        }
        _ => panic!("{usage}"),
    }
}
