//! `nearest` keys: each located network goes to its nearest up candidate (great-circle
//! distance divided by the node's bias), networks with the same ranking share a region,
//! a node going down moves its networks to the next of their ranking without a
//! recompile, and the other keys keep their precedence.
mod common;

use std::net::IpAddr;

use common::{db, engine, ip, Scratch};
use geodns_maps::{
    compile::nearest::distance_km, engine::QTYPE_A, mmdb::Value, Engine, NodeState, Question,
    RegionKey, Resolution,
};

/// A City record (`MaxMind` schema): country and coordinates.
fn city(country: &str, lat: f64, lon: f64) -> Value {
    Value::map([
        ("country", Value::map([("iso_code", Value::str(country))])),
        (
            "location",
            Value::map([
                ("latitude", Value::Double(lat)),
                ("longitude", Value::Double(lon)),
            ]),
        ),
    ])
}

/// Nodes: (name, lat, lon).
const NODES: [(&str, f64, f64); 4] = [
    ("fra", 50.11, 8.68),
    ("ams", 52.37, 4.90),
    ("nyc", 40.71, -74.01),
    ("sin", 1.35, 103.82),
];

/// Client networks: (network, country, lat, lon).
const NETS: [(&str, &str, f64, f64); 8] = [
    ("198.51.100.0/26", "DE", 48.14, 11.58), // Munich: fra, ams, ...
    ("198.51.100.64/26", "DE", 53.55, 9.99), // Hamburg: ams (318 km) before fra (393)
    ("198.51.100.128/26", "DE", 48.78, 9.18), // Stuttgart: the same ranking as Munich
    ("203.0.113.0/25", "US", 42.36, -71.06), // Boston: nyc first
    ("203.0.113.128/25", "JP", 35.68, 139.69), // Tokyo: sin first, but JP has a key
    ("192.0.2.0/25", "BR", -23.55, -46.63),  // Sao Paulo: nyc first
    ("192.0.2.128/25", "IN", 19.08, 72.88),  // Mumbai: sin first
    ("2001:db8::/32", "AU", -33.87, 151.21), // Sydney: sin first
];

fn setup(extra_nodes: &str, k: usize) -> (Scratch, Engine) {
    let s = Scratch::new("nearest");
    let mut nets: Vec<(&str, Value)> = NETS
        .iter()
        .map(|(n, c, lat, lon)| (*n, city(c, *lat, *lon)))
        .collect();
    // A network the database knows without coordinates: the default answers it.
    nets.push((
        "100.64.0.0/16",
        Value::map([("country", Value::map([("iso_code", Value::str("FR"))]))]),
    ));
    db(&s, "city.mmdb", 6, &nets);
    let nodes: String = NODES.iter().fold(String::new(), |mut out, (n, lat, lon)| {
        use std::fmt::Write as _;
        let i = out.len() % 200 + 1;
        let _ = writeln!(
            out,
            "[nodes.{n}]\nipv4 = \"198.18.{i}.1\"\nipv6 = \"2001:2:0:{i}::1\"\nlat = {lat}\nlon = {lon}"
        );
        out
    });
    let config = s.config(&format!(
        r#"
[zone]
origin = "cdn.example.net."
[[zone.ns]]
name = "ns1.example.org."

{nodes}
{extra_nodes}
[nodes.core]
ipv4 = "198.18.250.1"

[geoip]
country = "city.mmdb"
city = "city.mmdb"
nearest_k = {k}

[maps.main]
"JP" = ["fra"]
nearest = ["fra", "ams", "nyc", "sin"]
default = ["core"]

[maps.spread]
nearest = {{ fra = 1, ams = 1, nyc = 1, sin = 1 }}

[[records]]
name = "www"
map = "main"

[[records]]
name = "dl"
map = "spread"
policy = "spread"

[fallback]
core = 1
"#
    ));
    (s, engine(config))
}

fn node_of(e: &Engine, a: IpAddr) -> String {
    e.config()
        .nodes
        .iter()
        .find(|n| n.ipv4.iter().any(|x| IpAddr::V4(*x) == a))
        .map(|n| n.name.clone())
        .unwrap_or_default()
}

fn answer(e: &Engine, name: &str, client: &str) -> String {
    match e.resolve(&Question::new(
        &format!("{name}.cdn.example.net."),
        QTYPE_A,
        ip(client),
    )) {
        Resolution::Addresses { addrs, .. } => node_of(e, addrs[0]),
        other => panic!("{name} from {client}: {other:?}"),
    }
}

/// The nearest node by plain great-circle distance, as a reference.
fn nearest_by_hand(lat: f64, lon: f64) -> &'static str {
    NODES
        .iter()
        .min_by(|a, b| {
            distance_km((lat, lon), (a.1, a.2)).total_cmp(&distance_km((lat, lon), (b.1, b.2)))
        })
        .map(|n| n.0)
        .expect("nodes")
}

#[test]
fn every_located_network_gets_its_nearest_node() {
    let (_s, e) = setup("", 4);
    for (net, country, lat, lon) in NETS {
        let client = net.split('/').next().expect("address");
        let want = if country == "JP" {
            "fra"
        } else {
            nearest_by_hand(lat, lon)
        };
        assert_eq!(answer(&e, "www", client), want, "{net} ({country})");
    }
    assert_eq!(
        answer(&e, "www", "198.51.100.70"),
        "ams",
        "Hamburg is nearer ams"
    );
    // No coordinates: the default key.
    assert_eq!(answer(&e, "www", "100.64.1.1"), "core");
}

#[test]
fn networks_with_the_same_ranking_share_a_region() {
    let (_s, e) = setup("", 4);
    let c = e.compiled();
    let region = |a: &str| c.lookup(ip(a)).region;
    assert_eq!(
        region("198.51.100.1"),
        region("198.51.100.130"),
        "Munich and Stuttgart"
    );
    assert_ne!(
        region("198.51.100.1"),
        region("198.51.100.70"),
        "Hamburg ranks ams first"
    );
    // Region 0, the network without coordinates, and at most one region per other
    // network, Munich and Stuttgart sharing one.
    assert!(
        c.region_count() <= NETS.len() + 1,
        "{} regions",
        c.region_count()
    );
}

#[test]
fn a_node_going_down_moves_its_networks_to_the_next_of_their_ranking() {
    let (_s, e) = setup("", 4);
    let mut states = e.states().clone();
    states.set("fra", NodeState::Down);
    let after = e.with_states(&states);
    // Munich: fra, then ams.
    assert_eq!(answer(&e, "www", "198.51.100.1"), "fra");
    assert_eq!(answer(&after, "www", "198.51.100.1"), "ams");
    // Boston is untouched.
    assert_eq!(answer(&after, "www", "203.0.113.1"), "nyc");
    // The regions did not change: the same compiled table, other answer sets.
    assert!(std::sync::Arc::ptr_eq(e.compiled(), after.compiled()));
    // With k = 1 the ranking holds fra only: fra down means the fallback answers.
    let (_s1, one) = setup("", 1);
    let mut states = one.states().clone();
    states.set("fra", NodeState::Down);
    let one_down = one.with_states(&states);
    assert_eq!(answer(&one_down, "www", "198.51.100.1"), "core");
}

#[test]
fn bias_widens_a_nodes_reach() {
    // `far` (Berlin, 504 km from Munich) has bias 20: 25 km beats `near`'s 45 km.
    let (_s, e) = setup("", 4);
    assert_eq!(answer(&e, "www", "198.51.100.1"), "fra");
    let s = Scratch::new("nearest-bias");
    let nets = vec![("198.51.100.0/24", city("DE", 48.14, 11.58))];
    db(&s, "city.mmdb", 6, &nets);
    let config = s.config(
        r#"
[zone]
origin = "cdn.example.net."
[[zone.ns]]
name = "ns1.example.org."
[nodes.near]
ipv4 = "198.18.1.1"
lat = 48.0
lon = 11.0
[nodes.far]
ipv4 = "198.18.2.1"
lat = 52.52
lon = 13.40
bias = 20
[geoip]
country = "city.mmdb"
city = "city.mmdb"
[maps.main]
nearest = ["near", "far"]
[[records]]
name = "www"
map = "main"
[fallback]
near = 1
"#,
    );
    let e = engine(config);
    assert_eq!(
        answer(&e, "www", "198.51.100.1"),
        "far",
        "504 km / 20 beats 45 km"
    );
}

#[test]
fn spread_over_the_ranking_weighs_closeness() {
    let (_s, e) = setup("", 4);
    // Munich's ranking fra, ams, ... with equal weights: 4:3:2:1.
    let x = e.explain(ip("198.51.100.1"), None);
    let rec = x
        .records
        .iter()
        .find(|r| r.name.starts_with("dl."))
        .expect("dl");
    assert_eq!(rec.a.weights, vec![4, 3, 2, 1]);
    let names: Vec<&str> = rec.candidates.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(names, ["fra", "ams", "nyc", "sin"]);
}

#[test]
fn explain_shows_the_location_and_the_ranking() {
    let (_s, e) = setup("", 4);
    let x = e.explain(ip("198.51.100.70"), None);
    let facts = x.facts.as_ref().expect("facts");
    let (lat, lon) = facts.location.expect("a location");
    assert!((lat - 53.55).abs() < 1e-3 && (lon - 9.99).abs() < 1e-3);
    let main = x.maps.iter().find(|m| m.map == "main").expect("main");
    assert_eq!(main.key, Some(RegionKey::Nearest));
    let ranked: Vec<&str> = main.nearest.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(ranked, ["ams", "fra", "nyc", "sin"]);
    assert!(main.nearest[0].distance_km < main.nearest[1].distance_km);
    assert!(
        main.why.contains("first up one answers `best` (ams)"),
        "{}",
        main.why
    );
    // region_of finds the compiled region from the facts again.
    assert_eq!(
        e.compiled().region_of(facts),
        Some(e.compiled().lookup(ip("198.51.100.70")).region)
    );
}

#[test]
fn config_errors_name_the_problem() {
    let s = Scratch::new("nearest-errors");
    db(
        &s,
        "city.mmdb",
        6,
        &[("198.51.100.0/24", city("DE", 48.1, 11.6))],
    );
    let base = |nodes: &str, geoip: &str, key: &str| {
        format!(
            r#"
[zone]
origin = "cdn.example.net."
[[zone.ns]]
name = "ns1.example.org."
{nodes}
{geoip}
[maps.main]
{key}
[[records]]
name = "www"
map = "main"
[fallback]
a = 1
"#
        )
    };
    let parse = |t: &str| {
        geodns_maps::Config::from_str_named(t, &s.path("c.toml").display().to_string())
            .expect_err("must be refused")
            .to_string()
    };
    let e = parse(&base(
        "[nodes.a]\nipv4 = \"198.18.1.1\"",
        "[geoip]\ncountry = \"city.mmdb\"\ncity = \"city.mmdb\"",
        "nearest = [\"a\"]",
    ));
    assert!(e.contains("no `lat` and `lon`"), "{e}");
    let e = parse(&base(
        "[nodes.a]\nipv4 = \"198.18.1.1\"\nlat = 1.0\nlon = 2.0",
        "[geoip]\ncountry = \"city.mmdb\"",
        "nearest = [\"a\"]",
    ));
    assert!(e.contains("geoip.city"), "{e}");
    let e = parse(&base(
        "[nodes.a]\nipv4 = \"198.18.1.1\"\nlat = 1.0\nlon = 2.0",
        "[geoip]\ncountry = \"city.mmdb\"\ncity = \"city.mmdb\"\nnearest_k = 9",
        "nearest = [\"a\"]",
    ));
    assert!(e.contains("nearest_k"), "{e}");
    let e = parse(&base(
        "[nodes.a]\nipv4 = \"198.18.1.1\"\nlat = 1.0\nlon = 2.0\nbias = 0",
        "[geoip]\ncountry = \"city.mmdb\"\ncity = \"city.mmdb\"",
        "nearest = [\"a\"]",
    ));
    assert!(e.contains("bias"), "{e}");
}

/// `nearest` as the catch-all of a map (no `default`): every located network gets its
/// ranking; a network without coordinates, an address in no database and a ranking
/// whose nodes are all down get `[fallback]`. `[fallback]` itself cannot be
/// `nearest` (its addresses have no location): the config says so.
#[test]
fn nearest_without_default_leaves_the_rest_to_the_fallback() {
    let (_s, e) = setup(
        "[maps.bare]\nnearest = [\"fra\", \"ams\", \"nyc\", \"sin\"]\n[[records]]\nname = \"bare\"\nmap = \"bare\"\n",
        2,
    );
    assert_eq!(answer(&e, "bare", "198.51.100.1"), "fra", "Munich");
    assert_eq!(answer(&e, "bare", "203.0.113.1"), "nyc", "Boston");
    assert_eq!(answer(&e, "bare", "100.64.1.1"), "core", "no coordinates");
    assert_eq!(answer(&e, "bare", "100.65.1.1"), "core", "in no database");
    let mut states = e.states().clone();
    states.set("fra", NodeState::Down);
    states.set("ams", NodeState::Down);
    let down = e.with_states(&states);
    assert_eq!(
        answer(&down, "bare", "198.51.100.1"),
        "core",
        "k = 2, both down"
    );
    assert_eq!(answer(&down, "bare", "203.0.113.1"), "nyc");

    let s = Scratch::new("nearest-fallback");
    let text = "[zone]\norigin = \"cdn.example.net.\"\n[[zone.ns]]\nname = \"ns1.example.org.\"\n\
                [nodes.a]\nipv4 = \"198.18.1.1\"\n[fallback]\nnearest = 1\n";
    let e = geodns_maps::Config::from_str_named(text, &s.path("c.toml").display().to_string())
        .expect_err("nearest as the fallback")
        .to_string();
    assert!(
        e.contains("fallback.nearest") && e.contains("no location"),
        "{e}"
    );
}
