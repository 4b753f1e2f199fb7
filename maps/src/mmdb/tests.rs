use super::*;
use maxminddb::{PathElement, Reader};
use std::net::{Ipv4Addr, Ipv6Addr};

fn country(code: &str) -> Value {
    Value::map([("country", Value::map([("iso_code", Value::str(code))]))])
}

fn lookup_country(r: &Reader<Vec<u8>>, ip: &str) -> Option<String> {
    let res = r.lookup(ip.parse().expect("ip")).expect("lookup");
    res.decode_path::<String>(&[PathElement::Key("country"), PathElement::Key("iso_code")])
        .expect("decode")
}

#[test]
fn round_trips_through_maxminddb() {
    let mut w = Writer::new(6, "Test").alias_ipv4(true);
    w.insert(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8, &country("US"))
        .expect("insert");
    // Nested: splits the /8.
    w.insert(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16, &country("DE"))
        .expect("insert");
    w.insert(
        IpAddr::V6("2001:db8::".parse::<Ipv6Addr>().expect("v6")),
        32,
        &Value::map([
            ("country", Value::map([("iso_code", Value::str("JP"))])),
            ("n", Value::U64(1 << 40)),
            ("d", Value::Double(1.5)),
            ("b", Value::Bool(true)),
            ("long", Value::str(&"x".repeat(70_000))),
            ("a", Value::Array((0..300).map(Value::U32).collect())),
        ]),
    )
    .expect("insert");
    let bytes = w.to_bytes().expect("write");
    let r = Reader::from_source(bytes).expect("valid database");
    r.verify().expect("verifies");
    assert_eq!(lookup_country(&r, "10.2.3.4").as_deref(), Some("US"));
    assert_eq!(lookup_country(&r, "10.1.3.4").as_deref(), Some("DE"));
    assert_eq!(lookup_country(&r, "11.0.0.1"), None);
    assert_eq!(lookup_country(&r, "2001:db8::1").as_deref(), Some("JP"));
    // The aliases reach the IPv4 subtree.
    assert_eq!(lookup_country(&r, "::ffff:10.1.0.1").as_deref(), Some("DE"));
    assert_eq!(
        lookup_country(&r, "2002:0a00:0001::").as_deref(),
        Some("US")
    );
    let net = r
        .lookup("10.200.0.1".parse().expect("ip"))
        .expect("lookup")
        .network()
        .expect("network");
    assert_eq!(net.to_string(), "10.128.0.0/9");
    // Iteration yields each IPv4 network once (aliases skipped).
    let nets: Vec<String> = r
        .networks(maxminddb::WithinOptions::default())
        .expect("iterate")
        .map(|n| n.expect("network").network().expect("net").to_string())
        .collect();
    assert_eq!(nets.len(), 1 + 8 + 1, "{nets:?}");
}

#[test]
fn ipv4_database() {
    let mut w = Writer::new(4, "Test");
    w.insert(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24, &country("FR"))
        .expect("insert");
    assert!(w
        .insert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128, &country("FR"))
        .is_err());
    let r = Reader::from_source(w.to_bytes().expect("write")).expect("valid");
    r.verify().expect("verifies");
    assert_eq!(lookup_country(&r, "192.0.2.9").as_deref(), Some("FR"));
}

#[test]
fn synthetic_database_is_deterministic_and_readable() {
    let (mut writer, stats) = synth::country_asn(5_000, 7).expect("synth");
    assert_eq!(stats.networks_v4 + stats.networks_v6, 5_000);
    let first = writer.to_bytes().expect("write");
    let second = synth::country_asn(5_000, 7)
        .expect("synth")
        .0
        .to_bytes()
        .expect("write");
    assert_eq!(first, second);
    let reader = Reader::from_source(first).expect("valid");
    reader.verify().expect("verifies");
    let count = reader
        .networks(maxminddb::WithinOptions::default())
        .expect("iterate")
        .count();
    assert_eq!(count, 5_000);
}
