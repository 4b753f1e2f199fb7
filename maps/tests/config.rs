//! Config parsing: every example config parses, and each bad input names the file, the
//! line and the key, and says what was expected.
mod common;

use common::{base_config, Scratch};
use geodns_maps::{Config, ConfigError, ConfigProblem, ConfigWarning, Policy, RegionKey};

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is in the config"))
        + 1
}

/// Parses `text` expecting an error on the line holding `needle`, for `key`; returns the
/// message.
fn expect_error(text: &str, needle: &str, key: &str) -> (ConfigError, String) {
    let err = Config::from_str_named(text, "bad.toml").expect_err("the config should be rejected");
    let msg = err.to_string();
    let want_line = line_of(text, needle);
    let (file, line, got_key) = match &err {
        ConfigError::Syntax {
            file, line, key, ..
        }
        | ConfigError::Invalid {
            file, line, key, ..
        } => (file.clone(), *line, key.clone()),
        other => panic!("expected a located error, got {other:?}"),
    };
    assert_eq!(file, "bad.toml", "{msg}");
    assert_eq!(line, want_line, "line of `{needle}` in: {msg}");
    assert_eq!(got_key, key, "{msg}");
    assert!(msg.starts_with(&format!("bad.toml:{want_line}:")), "{msg}");
    (err, msg)
}

fn problem(err: &ConfigError) -> &ConfigProblem {
    match err {
        ConfigError::Invalid { problem, .. } => problem,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

const MAP: &str = r#"
[geoip]
country = "c.mmdb"

[maps.main]
"US" = { us1 = 10, us2 = 5 }
default = { eu1 = 1 }

[[records]]
name = "www"
map = "main"
"#;

/// Every `*.toml` under the repository (outside `target/` and hidden directories) that
/// has a `[zone]` table is a geodns config.
fn shipped_configs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a repository directory") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                shipped_configs(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "toml")
            && std::fs::read_to_string(&path).is_ok_and(|t| t.lines().any(|l| l.trim() == "[zone]"))
        {
            out.push(path);
        }
    }
}

#[test]
fn every_example_config_parses_and_compiles() {
    let mut configs = Vec::new();
    shipped_configs(common::repo_root(), &mut configs);
    assert!(
        configs.iter().any(|p| p.ends_with("examples/demo.toml")),
        "found {configs:?}"
    );
    for path in configs {
        let config = Config::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        common::compile(&config);
    }
}

#[test]
fn demo_config_reads_as_documented() {
    let c =
        Config::from_path(&common::repo_root().join("examples/demo.toml")).expect("demo parses");
    assert_eq!(c.zone.origin, "cdn.example.net.");
    assert_eq!(c.zone.mname, "ns1.cdn.example.net.");
    assert_eq!(c.zone.ns[0].ipv4.len(), 1);
    let img = c
        .records
        .iter()
        .find(|r| r.wildcard)
        .expect("a wildcard record");
    assert_eq!(img.name, "*.img.cdn.example.net.");
    assert_eq!(img.ttl, 300);
    let dl = c
        .records
        .iter()
        .find(|r| r.policy == Policy::Spread)
        .expect("a spread record");
    assert_eq!(dl.max_answers, 2);
    let main = c.map("main").expect("map main");
    assert_eq!(
        main.rules[0].key,
        RegionKey::Cidr("198.18.0.0/15".parse().expect("cidr"))
    );
    assert!(main.rules.iter().any(|r| r.key == RegionKey::Asn(64_500)));
    assert!(main
        .rules
        .iter()
        .any(|r| r.key == RegionKey::Continent(*b"EU")));
    let spread = c.map("spread").expect("map spread");
    let default = spread
        .rules
        .iter()
        .find(|r| r.key == RegionKey::Default)
        .expect("default");
    // Listed by name: the nodes' own weights, highest first.
    let got: Vec<(&str, u32)> = default
        .candidates
        .iter()
        .map(|c| (c.node.as_str(), c.weight))
        .collect();
    assert_eq!(got, [("fra1", 10), ("nyc1", 10), ("sin1", 5)]);
    let geoip = c.geoip.as_ref().expect("geoip");
    assert!(geoip.country[0].ends_with("examples/demo-country.mmdb"));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn unknown_node_in_a_map() {
    let text = base_config(&MAP.replace("us2 = 5", "nope = 5"));
    let (err, msg) = expect_error(&text, "nope = 5", "maps.main.\"US\".nope");
    assert!(matches!(problem(&err), ConfigProblem::UnknownNode { node, .. } if node == "nope"));
    assert!(msg.contains("expected one of"), "{msg}");
}

#[test]
fn zero_and_negative_weights() {
    for w in ["0", "-3", "1000001"] {
        let text = base_config(&MAP.replace("us2 = 5", &format!("us2 = {w}")));
        let (err, msg) = expect_error(&text, &format!("us2 = {w}"), "maps.main.\"US\".us2");
        assert!(
            matches!(problem(&err), ConfigProblem::BadWeight { .. }),
            "{msg}"
        );
        assert!(msg.contains("expected a whole number from 1"), "{msg}");
    }
    let text = base_config("").replace("core2 = 1", "core2 = 0");
    expect_error(&text, "core2 = 0", "fallback.core2");
    let text = base_config("").replace("weight = 5", "weight = -1");
    expect_error(&text, "weight = -1", "nodes.eu2.weight");
}

#[test]
fn duplicate_record() {
    let text = base_config(&format!(
        "{MAP}\n[[records]]\nname = \"WWW.cdn.example.net.\"\nmap = \"main\"\n"
    ));
    let (err, _) = expect_error(&text, "WWW.cdn", "records[1].name");
    let first = line_of(&text, "name = \"www\"");
    assert_eq!(
        problem(&err),
        &ConfigProblem::DuplicateRecord {
            name: "www.cdn.example.net.".to_owned(),
            first_line: first
        }
    );
}

#[test]
fn address_family_mismatch() {
    let text = base_config("").replace("ipv4 = \"198.18.1.2\"", "ipv4 = \"2001:db8::2\"");
    let (err, msg) = expect_error(&text, "2001:db8::2", "nodes.eu2.ipv4");
    assert!(
        matches!(
            problem(&err),
            ConfigProblem::FamilyMismatch {
                expected: "IPv4",
                ..
            }
        ),
        "{msg}"
    );
    let text = base_config("").replace(
        "ipv6 = \"2001:2:0:3::1\"",
        "ipv6 = [\"2001:2::1\", \"198.18.3.1\"]",
    );
    let (err, _) = expect_error(&text, "198.18.3.1", "nodes.as1.ipv6");
    assert!(matches!(
        problem(&err),
        ConfigProblem::FamilyMismatch {
            expected: "IPv6",
            ..
        }
    ));
    let text = base_config("").replace("ipv4 = \"198.18.1.2\"", "ipv4 = \"198.18.1\"");
    let (err, _) = expect_error(&text, "198.18.1\"", "nodes.eu2.ipv4");
    assert!(matches!(problem(&err), ConfigProblem::BadAddress { .. }));
}

#[test]
fn unknown_fields() {
    let text = base_config("").replace("weight = 5", "wieght = 5");
    let (_, msg) = expect_error(&text, "wieght", "nodes.eu2.wieght");
    assert!(msg.contains("unknown field `wieght`"), "{msg}");
    assert!(msg.contains("weight"), "says what was expected: {msg}");
    let text = base_config("").replace("ttl = 30", "ttl = 30\ncolour = \"blue\"");
    expect_error(&text, "colour", "zone.colour");
    let text = base_config("\n[extra]\nx = 1\n");
    expect_error(&text, "[extra]", "extra");
}

#[test]
fn wrong_types_and_values() {
    let text = base_config("").replace("weight = 5", "weight = \"five\"");
    let (_, msg) = expect_error(&text, "\"five\"", "nodes.eu2.weight");
    assert!(msg.contains("i64") || msg.contains("integer"), "{msg}");
    let text = base_config("").replace("weight = 5", "weight = 5\nadmin = \"maybe\"");
    let (_, msg) = expect_error(&text, "maybe", "nodes.eu2.admin");
    assert!(msg.contains("`up`, `down`, `drain`"), "{msg}");
    let text = base_config(&MAP.replace("map = \"main\"", "map = \"main\"\npolicy = \"fastest\""));
    expect_error(&text, "fastest", "records.policy");
}

#[test]
fn bad_region_keys() {
    let cases = [
        ("\"10.0.0.1/8\"", "10.0.0.1/8"),
        ("\"10.0.0.0/33\"", "10.0.0.0/33"),
        ("\"USA\"", "USA"),
        ("\"continent:XX\"", "continent:XX"),
        ("\"country:U1\"", "country:U1"),
        ("\"mars\"", "mars"),
        ("\"AS99999999999\"", "AS99999999999"),
    ];
    for (quoted, key) in cases {
        let text = base_config(&MAP.replace("\"US\"", quoted));
        let (err, msg) = expect_error(&text, quoted, &format!("maps.main.\"{key}\""));
        let ok = matches!(
            problem(&err),
            ConfigProblem::BadCidr { .. }
                | ConfigProblem::BadCountry { .. }
                | ConfigProblem::BadContinent { .. }
                | ConfigProblem::BadRegionKey { .. }
                | ConfigProblem::BadAsn { .. }
        );
        assert!(ok, "{msg}");
        assert!(
            msg.contains("expected") || msg.contains("did you mean"),
            "{msg}"
        );
    }
    // The same key written twice.
    let text = base_config(&MAP.replace("default =", "\"country:US\" = { eu1 = 1 }\ndefault ="));
    let (err, _) = expect_error(&text, "country:US", "maps.main.\"country:US\"");
    assert!(matches!(problem(&err), ConfigProblem::DuplicateKey { key, .. } if key == "US"));
}

#[test]
fn keys_that_need_a_database() {
    let text = base_config(&MAP.replace("\"US\"", "\"AS13335\""));
    let (err, _) = expect_error(&text, "AS13335", "maps.main.\"AS13335\"");
    assert!(matches!(
        problem(&err),
        ConfigProblem::NeedsDatabase {
            needs: "asn` or `[bgp] rib",
            ..
        }
    ));
    let text = base_config(
        &MAP.replace("country = \"c.mmdb\"", "")
            .replace("[geoip]", ""),
    );
    let (err, _) = expect_error(&text, "\"US\"", "maps.main.\"US\"");
    assert!(matches!(
        problem(&err),
        ConfigProblem::NeedsDatabase {
            needs: "country",
            ..
        }
    ));
    let text = base_config(&MAP.replace("\"US\"", "\"continent:EU\"").replace(
        "country = \"c.mmdb\"",
        "country = \"c.mmdb\"\ncountry_field = \"country_code\"",
    ));
    let (err, _) = expect_error(&text, "continent:EU", "maps.main.\"continent:EU\"");
    assert!(matches!(
        problem(&err),
        ConfigProblem::NeedsDatabase {
            needs: "continent_field",
            ..
        }
    ));
}

#[test]
fn records() {
    let geo = "";
    let text = base_config(&format!(
        "{geo}{}",
        MAP.replace("map = \"main\"", "map = \"mian\"")
    ));
    let (err, msg) = expect_error(&text, "mian", "records[0].map");
    assert!(matches!(problem(&err), ConfigProblem::UnknownMap { .. }));
    assert!(msg.contains("main"), "lists the known maps: {msg}");
    let text = base_config(&format!(
        "{geo}{}",
        MAP.replace("name = \"www\"", "name = \"www.example.org.\"")
    ));
    let (err, _) = expect_error(&text, "www.example.org.", "records[0].name");
    assert!(matches!(problem(&err), ConfigProblem::OutsideZone { .. }));
    let text = base_config(&format!(
        "{geo}{}",
        MAP.replace("name = \"www\"", "name = \"a.*.x\"")
    ));
    let (err, _) = expect_error(&text, "a.*.x", "records[0].name");
    assert!(matches!(problem(&err), ConfigProblem::BadName { .. }));
    let text = base_config(&format!(
        "{geo}{}",
        MAP.replace("map = \"main\"", "map = \"main\"\nmax_answers = 2")
    ));
    let (err, _) = expect_error(&text, "max_answers", "records[0].max_answers");
    assert_eq!(problem(&err), &ConfigProblem::MaxAnswersWithBest);
    let text = base_config(&format!(
        "{geo}{}",
        MAP.replace(
            "map = \"main\"",
            "map = \"main\"\npolicy = \"spread\"\nmax_answers = 9"
        )
    ));
    let (err, _) = expect_error(&text, "max_answers", "records[0].max_answers");
    assert!(matches!(
        problem(&err),
        ConfigProblem::OutOfRange {
            what: "max_answers",
            ..
        }
    ));
}

#[test]
fn zone_and_fallback() {
    let text = base_config("").replace("[fallback]\ncore1 = 3\ncore2 = 1", "");
    let err = Config::from_str_named(&text, "bad.toml").expect_err("no fallback");
    assert_eq!(problem(&err), &ConfigProblem::EmptyFallback);
    assert!(err.to_string().contains("fallback"));
    let text = base_config("").replace(
        "origin = \"cdn.example.net.\"",
        "origin = \"cdn..example.net.\"",
    );
    expect_error(&text, "origin", "zone.origin");
    let text = base_config("").replace("ttl = 30", "ttl = 4294967295");
    expect_error(&text, "ttl = 4294967295", "zone.ttl");
    let text = "[zone]\norigin = \"x.\"\n";
    let (err, _) = expect_error(text, "[zone]", "zone.ns");
    assert_eq!(problem(&err), &ConfigProblem::NoNameServers);
    let err =
        Config::from_str_named("[nodes.a]\nipv4 = \"1.2.3.4\"\n", "bad.toml").expect_err("no zone");
    assert!(err.to_string().contains("zone"), "{err}");
}

#[test]
fn check_targets_and_http_bases() {
    for bad in ["198.18.1.1", "ftp://x", "host:0", "http://"] {
        let text = base_config("").replace("weight = 5", &format!("weight = 5\ncheck = \"{bad}\""));
        let (err, _) = expect_error(&text, "check =", "nodes.eu2.check");
        assert!(matches!(problem(&err), ConfigProblem::BadTarget { .. }));
    }
    let text = base_config("").replace("weight = 5", "weight = 5\nhttp_base = \"eu2.example.net\"");
    expect_error(&text, "http_base", "nodes.eu2.http_base");
    let good = base_config("").replace(
        "weight = 5",
        "weight = 5\ncheck = \"[2001:2::1]:8080\"\nhttp_base = \"https://eu2.example.net\"",
    );
    let c = Config::from_str_named(&good, "ok.toml").expect("valid targets");
    let eu2 = c.node("eu2").expect("eu2");
    assert_eq!(eu2.check.as_deref(), Some("[2001:2::1]:8080"));
}

#[test]
fn toml_syntax_error() {
    let text = base_config("").replace("weight = 5", "weight = = 5");
    let (err, _) = expect_error(&text, "weight = = 5", "nodes.eu2.weight");
    assert!(matches!(err, ConfigError::Syntax { .. }));
}

#[test]
fn missing_file_names_the_path() {
    let s = Scratch::new("cfg");
    let p = s.path("nope.toml");
    let err = Config::from_path(&p).expect_err("missing file");
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn relative_paths_and_defaults() {
    let s = Scratch::new("cfg");
    let c = s.config(&base_config(
        "[geoip]\ncountry = [\"v4.mmdb\", \"/abs/v6.mmdb\"]\nasn = \"a.mmdb\"\ncountry_field = \"country_code\"\n",
    ));
    let g = c.geoip.as_ref().expect("geoip");
    assert_eq!(g.country, [s.path("v4.mmdb"), "/abs/v6.mmdb".into()]);
    assert_eq!(g.asn, [s.path("a.mmdb")]);
    assert_eq!(
        g.continent_field, None,
        "flattened schema: no continent by default"
    );
    assert_eq!(g.asn_field, "autonomous_system_number");
    assert_eq!(c.zone.rname, "hostmaster.cdn.example.net.");
    assert_eq!(c.zone.mname, "ns1.cdn.example.net.");
    assert_eq!(c.fallback[0].node, "core1");
}

#[test]
fn warnings() {
    let text = base_config(&format!(
        "{MAP}\n[maps.unused]\ndefault = [\"as1\"]\n[maps.v6only]\ndefault = [\"as1\"]\n[maps.v4only]\ndefault = [\"us2\"]\n[[records]]\nname = \"v4\"\nmap = \"v4only\"\n[[records]]\nname = \"{}x\"\nmap = \"v6only\"\n",
        "a.".repeat(20)
    ));
    let c = Config::from_str_named(&text, "w.toml").expect("valid");
    let w = c.warnings();
    assert!(
        w.contains(&ConfigWarning::UnusedNode { node: "eu2".into() }),
        "{w:?}"
    );
    assert!(
        w.contains(&ConfigWarning::UnusedMap {
            map: "unused".into()
        }),
        "{w:?}"
    );
    assert!(
        w.iter().any(
            |x| matches!(x, ConfigWarning::NoFamily { map, family: "IPv4", .. } if map == "v6only")
        ),
        "{w:?}"
    );
    assert!(
        w.iter().any(
            |x| matches!(x, ConfigWarning::NoFamily { map, family: "IPv6", .. } if map == "v4only")
        ),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|x| matches!(x, ConfigWarning::NameTooLong { .. })),
        "{w:?}"
    );
    assert!(
        !w.iter()
            .any(|x| matches!(x, ConfigWarning::NoFamily { map, .. } if map == "main")),
        "{w:?}"
    );
}

#[test]
fn rrl_and_guard_defaults_and_settings() {
    let c = Config::from_str_named(&base_config(""), "ok.toml").expect("valid");
    assert_eq!(
        (
            c.rrl.rate,
            c.rrl.burst,
            c.rrl.slip,
            c.rrl.ipv4_prefix,
            c.rrl.ipv6_prefix
        ),
        (200, 200, 2, 24, 56),
        "on by default, NSD's rate"
    );
    assert_eq!(
        c.guard.reflector_ports,
        geodns_common::DEFAULT_REFLECTOR_PORTS.to_vec()
    );
    assert!(c.guard.served_addresses.is_none());
    let text = base_config(
        "\n[rrl]\nrate = 50\nslip = 0\nipv4_prefix = 32\n\n[guard]\nreflector_ports = [19, 123]\nserved_addresses = [\"198.18.0.1\", \"2001:2::1\"]\n",
    );
    let c = Config::from_str_named(&text, "ok.toml").expect("valid");
    assert_eq!(
        (c.rrl.rate, c.rrl.burst, c.rrl.slip),
        (50, 50, 0),
        "burst defaults to rate"
    );
    assert_eq!(c.rrl.ipv4_prefix, 32);
    assert_eq!(c.guard.reflector_ports, vec![19, 123]);
    assert_eq!(c.guard.served_addresses.as_ref().map(Vec::len), Some(2));
    let off =
        Config::from_str_named(&base_config("\n[rrl]\nrate = 0\n"), "ok.toml").expect("valid");
    assert_eq!(off.rrl.rate, 0);
}

#[test]
fn bad_rrl_and_guard_settings_name_line_and_key() {
    for (extra, needle, key) in [
        ("\n[rrl]\nrate = -1\n", "rate = -1", "rrl.rate"),
        ("\n[rrl]\nslip = 11\n", "slip = 11", "rrl.slip"),
        ("\n[rrl]\nburst = 0\n", "burst = 0", "rrl.burst"),
        (
            "\n[rrl]\nipv4_prefix = 33\n",
            "ipv4_prefix = 33",
            "rrl.ipv4_prefix",
        ),
        (
            "\n[rrl]\nipv6_prefix = 129\n",
            "ipv6_prefix = 129",
            "rrl.ipv6_prefix",
        ),
        ("\n[rrl]\nbuckets = 0\n", "buckets = 0", "rrl.buckets"),
        (
            "\n[guard]\nreflector_ports = [19, 70000]\n",
            "70000",
            "guard.reflector_ports",
        ),
        (
            "\n[guard]\nreflector_ports = [0]\n",
            "[0]",
            "guard.reflector_ports",
        ),
        (
            "\n[guard]\nserved_addresses = [\"198.18.0\"]\n",
            "198.18.0\"",
            "guard.served_addresses",
        ),
    ] {
        let (err, msg) = expect_error(&base_config(extra), needle, key);
        assert!(
            matches!(
                problem(&err),
                ConfigProblem::OutOfRange { .. } | ConfigProblem::BadAddress { .. }
            ),
            "{msg}"
        );
    }
    let (_, msg) = expect_error(&base_config("\n[rrl]\nrat = 5\n"), "rat = 5", "rrl.rat");
    assert!(msg.contains("unknown field `rat`"), "{msg}");
    let many: Vec<String> = (0..=geodns_common::MAX_SERVED)
        .map(|i| format!("\"198.18.0.{i}\""))
        .collect();
    let text = base_config(&format!(
        "\n[guard]\nserved_addresses = [{}]\n",
        many.join(", ")
    ));
    let (err, _) = expect_error(&text, "served_addresses", "guard.served_addresses");
    assert!(matches!(problem(&err), ConfigProblem::TooManyServed { .. }));
}

#[test]
fn fleet_quorum_and_database_pins() {
    let s = Scratch::new("fleet");
    let digest = "ab".repeat(32);
    let c = s.config(&base_config(&format!(
        "[fleet]\nquorum = 2\n[geoip]\ncountry = \"c.mmdb\"\n[geoip.sha256]\n\"c.mmdb\" = \"{digest}\"\n"
    )));
    assert_eq!(c.fleet.quorum, geodns_maps::Quorum::Boxes(2));
    let g = c.geoip.as_ref().expect("geoip");
    assert_eq!(g.sha256, [(s.path("c.mmdb"), [0xab; 32])]);
    let c = s.config(&base_config("[fleet]\nquorum = \"majority\"\n"));
    assert_eq!(c.fleet.quorum, geodns_maps::Quorum::Majority);
    assert_eq!(c.fleet.quorum.needed(3), 2);
    assert_eq!(c.fleet.quorum.needed(4), 3);
    assert_eq!(geodns_maps::Quorum::Boxes(2).needed(5), 2);
    let c = s.config(&base_config(""));
    assert_eq!(c.fleet.quorum, geodns_maps::Quorum::Majority, "the default");

    for bad in ["0", "-1", "\"most\""] {
        let text = base_config(&format!("[fleet]\nquorum = {bad}\n"));
        let (err, msg) = expect_error(&text, "quorum =", "fleet.quorum");
        assert!(
            matches!(problem(&err), ConfigProblem::BadQuorum { .. }),
            "{msg}"
        );
    }
    let text = base_config(&format!(
        "[geoip]\ncountry = \"c.mmdb\"\n[geoip.sha256]\n\"other.mmdb\" = \"{digest}\"\n"
    ));
    let (err, msg) = expect_error(&text, "other.mmdb", "geoip.sha256.\"other.mmdb\"");
    assert!(
        matches!(problem(&err), ConfigProblem::UnknownDatabase { .. }),
        "{msg}"
    );
    assert!(msg.contains("`c.mmdb`"), "{msg}");
    let text = base_config("[geoip]\ncountry = \"c.mmdb\"\n[geoip.sha256]\n\"c.mmdb\" = \"abc\"\n");
    let (err, msg) = expect_error(&text, "\"abc\"", "geoip.sha256.\"c.mmdb\"");
    assert!(
        matches!(problem(&err), ConfigProblem::BadDigest { .. }),
        "{msg}"
    );
}
