//! The RFC 2136 update handler: bytes in, a response (or a drop) out, at a fixed
//! clock. Every response is decoded by hickory-proto and must carry the rcode the
//! handler reports; a change comes only with NOERROR. Each input also goes through the
//! update semantics without the signature check (`apply_unsigned`), which mutated
//! inputs would otherwise rarely pass; a change there must be a zone the engine can
//! be rebuilt with. Seeds: signed and unsigned updates from the handler's unit tests.
#![no_main]

use std::sync::{Arc, LazyLock};

use geodns::fallback::update::{apply_unsigned, process, ReplayCache, UpdateResult};
use geodns_maps::{Compiled, Config, Engine, NodeStates};
use libfuzzer_sys::fuzz_target;

/// The unit tests' clock and key (`fallback::update::tests`).
const NOW: u64 = 1_780_000_000;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let text = r#"
[zone]
origin = "cdn.example.net."
serial = 7
[[zone.ns]]
name = "ns1.example.org."
[nodes.a]
ipv4 = "198.18.1.1"
[maps.m]
default = ["a"]
[[records]]
name = "www"
map = "m"
[[records]]
name = "*.img"
map = "m"
[fallback]
a = 1
[[update.keys]]
name = "acme"
secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
allow = ["_acme-challenge", "x"]
types = ["TXT", "CNAME", "A", "MX"]
"#;
    let config = Config::from_str_named(text, "fuzz-update.toml").expect("the config parses");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("the config compiles");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
});

fuzz_target!(|data: &[u8]| {
    let mut cache = ReplayCache::default();
    let p = process(&ENGINE, data, NOW, &mut cache);
    if let Some(r) = &p.response {
        let m = hickory_like_decode(r);
        assert_eq!(m, p.rcode & 0xF, "header rcode");
    }
    assert!(p.change.is_none() || (p.rcode == 0 && p.result == UpdateResult::Applied));
    if let Some((rc, change)) = apply_unsigned(&ENGINE, data) {
        assert!(change.is_none() || rc == 0);
        if let Some((zone, serial, _)) = change {
            let e = ENGINE.with_zone(zone, serial);
            let _ = e.kernel_names();
        }
    }
});

/// The header's rcode after a full decode.
fn hickory_like_decode(r: &[u8]) -> u16 {
    let m = hickory_proto::op::Message::from_vec(r).expect("the response decodes");
    u16::from(m.metadata.response_code.low())
}
