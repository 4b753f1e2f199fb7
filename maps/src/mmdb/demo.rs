//! The demo databases (and the BGP RIB dump of `examples/route.toml`) committed under `examples/` (`cargo run -p geodns-maps --example
//! make-demo-db` writes them; a test checks the committed files are these bytes).
//!
//! Client networks are documentation and lab space: `192.0.2.0/24`, `198.51.100.0/24`,
//! `203.0.113.0/24`, `10.0.0.0/8`, `100.64.0.0/10`, `2001:db8::/32`, `3fff::/20`.

use std::net::IpAddr;

use super::{Value, WriteError, Writer};

/// File name and bytes of each demo database.
pub fn databases() -> Result<Vec<(&'static str, Vec<u8>)>, WriteError> {
    Ok(vec![
        ("demo-country.mmdb", country()?.to_bytes()?),
        ("demo-asn.mmdb", asn()?.to_bytes()?),
        ("route-city.mmdb", city()?.to_bytes()?),
        ("route-rib.mrt", crate::mrt::demo_rib()),
    ])
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn place(country: &str, continent: &str) -> Value {
    Value::map([
        ("continent", Value::map([("code", Value::str(continent))])),
        (
            "country",
            Value::map([
                ("iso_code", Value::str(country)),
                (
                    "names",
                    Value::map([("en", Value::str(&format!("Country {country}")))]),
                ),
            ]),
        ),
    ])
}

/// `MaxMind` schema (`country.iso_code`, `continent.code`), IPv6 tree with the IPv4
/// aliases. Later lines split earlier ones (nested networks).
pub fn country() -> Result<Writer, WriteError> {
    let mut w = Writer::new(6, "GeoDNS-Demo-Country")
        .alias_ipv4(true)
        .build_epoch(1_735_689_600);
    let nets: &[(&str, u8, &str, &str)] = &[
        // Two European halves that one map key covers: they merge into a /24.
        ("192.0.2.0", 25, "DE", "EU"),
        ("192.0.2.128", 25, "FR", "EU"),
        ("198.51.100.0", 25, "US", "NA"),
        ("198.51.100.128", 26, "BR", "SA"),
        ("198.51.100.192", 26, "JP", "AS"),
        ("203.0.113.0", 25, "AU", "OC"),
        ("203.0.113.128", 25, "US", "NA"),
        // Lab space; config CIDR keys override it.
        ("198.18.0.0", 15, "NL", "EU"),
        ("10.0.0.0", 9, "DE", "EU"),
        ("10.128.0.0", 9, "US", "NA"),
        // Nested: a Canadian /16 inside a US /10.
        ("100.64.0.0", 10, "US", "NA"),
        ("100.100.0.0", 16, "CA", "NA"),
        ("2001:db8::", 33, "DE", "EU"),
        ("2001:db8:8000::", 33, "FR", "EU"),
        // Nested inside the French /33.
        ("2001:db8:abcd:1200::", 56, "US", "NA"),
        ("3fff::", 20, "JP", "AS"),
        ("2001:2::", 48, "NL", "EU"),
    ];
    for (addr, len, country, continent) in nets {
        w.insert(ip(addr), *len, &place(country, continent))?;
    }
    Ok(w)
}

/// `GeoLite2-ASN` schema, IPv6 tree.
pub fn asn() -> Result<Writer, WriteError> {
    let mut w = Writer::new(6, "GeoDNS-Demo-ASN")
        .alias_ipv4(true)
        .build_epoch(1_735_689_600);
    let nets: &[(&str, u8, u32, &str)] = &[
        ("203.0.113.128", 25, 64_500, "Example Spread Networks"),
        (
            "2001:db8:abcd:1200::",
            56,
            64_500,
            "Example Spread Networks",
        ),
        ("198.51.100.0", 24, 64_501, "Example Transit"),
    ];
    for (addr, len, asn, org) in nets {
        w.insert(
            ip(addr),
            *len,
            &Value::map([
                ("autonomous_system_number", Value::U32(*asn)),
                ("autonomous_system_organization", Value::str(org)),
            ]),
        )?;
    }
    Ok(w)
}

/// A City database (`MaxMind` schema: `country.iso_code`, `continent.code`,
/// `location.latitude`/`longitude`) over the same documentation space, one city per
/// network, for `examples/route.toml` (`nearest` keys). `100.100.0.0/16` has no
/// coordinates (the map's `default` answers it).
pub fn city() -> Result<Writer, WriteError> {
    let mut w = Writer::new(6, "GeoDNS-Demo-City")
        .alias_ipv4(true)
        .build_epoch(1_735_689_600);
    let nets: &[(&str, u8, &str, &str, f64, f64)] = &[
        ("192.0.2.0", 26, "DE", "EU", 52.52, 13.40),     // Berlin
        ("192.0.2.64", 26, "FR", "EU", 48.86, 2.35),     // Paris
        ("192.0.2.128", 26, "ES", "EU", 40.42, -3.70),   // Madrid
        ("192.0.2.192", 26, "SE", "EU", 59.33, 18.07),   // Stockholm
        ("198.51.100.0", 26, "US", "NA", 41.88, -87.63), // Chicago
        ("198.51.100.64", 26, "US", "NA", 34.05, -118.24), // Los Angeles
        ("198.51.100.128", 26, "BR", "SA", -22.91, -43.17), // Rio de Janeiro
        ("198.51.100.192", 26, "JP", "AS", 35.68, 139.69), // Tokyo
        ("203.0.113.0", 25, "AU", "OC", -37.81, 144.96), // Melbourne
        ("203.0.113.128", 25, "US", "NA", 47.61, -122.33), // Seattle
        ("198.18.0.0", 15, "NL", "EU", 52.37, 4.90),     // the lab: Amsterdam
        ("10.0.0.0", 9, "DE", "EU", 48.14, 11.58),       // Munich
        ("10.128.0.0", 9, "US", "NA", 32.78, -96.80),    // Dallas
        ("100.64.0.0", 10, "US", "NA", 39.74, -104.99),  // Denver
        ("2001:db8::", 33, "DE", "EU", 53.55, 9.99),     // Hamburg
        ("2001:db8:8000::", 33, "FR", "EU", 45.76, 4.84), // Lyon
        ("2001:db8:abcd:1200::", 56, "US", "NA", 42.36, -71.06), // Boston
        ("3fff::", 20, "JP", "AS", 34.69, 135.50),       // Osaka
        ("2001:2::", 48, "NL", "EU", 52.37, 4.90),       // the lab: Amsterdam
    ];
    for (addr, len, country, continent, lat, lon) in nets {
        let mut record = place(country, continent);
        if let Value::Map(m) = &mut record {
            m.push((
                "location".to_owned(),
                Value::map([
                    ("latitude", Value::Double(*lat)),
                    ("longitude", Value::Double(*lon)),
                    ("accuracy_radius", Value::U16(100)),
                ]),
            ));
        }
        w.insert(ip(addr), *len, &record)?;
    }
    w.insert(ip("100.100.0.0"), 16, &place("CA", "NA"))?;
    Ok(w)
}
