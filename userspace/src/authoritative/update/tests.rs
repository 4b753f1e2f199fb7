use std::sync::Arc;

use geodns_maps::{Compiled, Config, NodeStates};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// The fuzz target's clock too.
pub(super) const NOW: u64 = 1_780_000_000;
const TXT: u16 = 16;

pub(super) fn engine() -> Engine {
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
[fallback]
a = 1
[[update.keys]]
name = "acme"
secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
"#;
    let config = Config::from_str_named(text, "update-test.toml").expect("config");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compiles");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
}

fn wire(n: &str) -> Vec<u8> {
    name::to_wire(n)
}

/// An RR: name, type, class, ttl, rdata.
fn rr(n: &str, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut b = wire(n);
    b.extend_from_slice(&rtype.to_be_bytes());
    b.extend_from_slice(&class.to_be_bytes());
    b.extend_from_slice(&ttl.to_be_bytes());
    b.extend_from_slice(&u16::try_from(rdata.len()).expect("len").to_be_bytes());
    b.extend_from_slice(rdata);
    b
}

/// An update of `zone` with prerequisites and updates, unsigned.
fn message(zone: &str, prereqs: &[Vec<u8>], updates: &[Vec<u8>]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, OPCODE_UPDATE << 3, 0, 0, 1];
    m.extend_from_slice(&u16::try_from(prereqs.len()).expect("n").to_be_bytes());
    m.extend_from_slice(&u16::try_from(updates.len()).expect("n").to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&wire(zone));
    m.extend_from_slice(&[0, 6, 0, 1]);
    for r in prereqs.iter().chain(updates) {
        m.extend_from_slice(r);
    }
    m
}

/// Signs `m` with `key` (the request MAC of RFC 8945 4.3.3).
fn sign(mut m: Vec<u8>, key: &str, secret: &[u8], time: u64) -> Vec<u8> {
    let key_wire = wire(key);
    let mut data = m.clone();
    data.extend_from_slice(&variables(&key_wire, time, 300, 0, &[]));
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mac = ring::hmac::sign(&k, &data);
    m.extend_from_slice(&tsig_rr(&key_wire, time, 300, mac.as_ref(), 0x1234, 0, &[]));
    m[11] += 1;
    m
}

fn add_txt(owner: &str, text: &str) -> Vec<u8> {
    let mut rd = vec![u8::try_from(text.len()).expect("len")];
    rd.extend_from_slice(text.as_bytes());
    rr(owner, TXT, CLASS_IN, 60, &rd)
}

const CHALLENGE: &str = "_acme-challenge.www.cdn.example.net.";

fn run(e: &Engine, m: &[u8], cache: &mut ReplayCache) -> Processed {
    let p = process(e, m, NOW, cache);
    if let Some(r) = &p.response {
        let reply = hickory_proto::op::Message::from_vec(r).expect("the response parses");
        assert_eq!(u16::from(reply.metadata.response_code.low()), p.rcode & 0xF);
    }
    p
}

/// The TSIG error field of a response.
fn tsig_error(r: &[u8]) -> u16 {
    let u = parse(r).expect("the response parses as an update message");
    let t = parse_tsig(&u.tsig.expect("a TSIG record").rdata).expect("TSIG RDATA");
    t.error
}

/// Writes signed updates (valid at the fuzz target's fixed time) as seeds for
/// `cargo xtask fuzz update`.
#[test]
fn write_fuzz_seeds() {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let dir = target.join("fuzz-seeds/update");
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let zone = "cdn.example.net.";
    let seeds = [
        message(zone, &[], &[add_txt(CHALLENGE, "tok")]),
        message(
            zone,
            &[rr(CHALLENGE, TYPE_ANY, CLASS_NONE, 0, &[])],
            &[add_txt(CHALLENGE, "a"), add_txt(CHALLENGE, "b")],
        ),
        message(
            zone,
            &[rr(CHALLENGE, TXT, CLASS_IN, 0, b"\x03tok")],
            &[rr(CHALLENGE, TXT, CLASS_NONE, 0, b"\x03tok")],
        ),
        message(zone, &[], &[rr(CHALLENGE, TYPE_ANY, CLASS_ANY, 0, &[])]),
        message(
            zone,
            &[],
            &[rr(
                CHALLENGE,
                5,
                CLASS_IN,
                60,
                &wire("www.cdn.example.net."),
            )],
        ),
    ];
    for (i, m) in seeds.into_iter().enumerate() {
        std::fs::write(
            dir.join(format!("signed-{i}")),
            sign(m.clone(), "acme", SECRET, NOW),
        )
        .expect("write a seed");
        std::fs::write(dir.join(format!("unsigned-{i}")), m).expect("write a seed");
    }
}

#[test]
fn a_signed_add_applies_once_and_a_replay_is_badtime() {
    let e = engine();
    let mut cache = ReplayCache::default();
    let m = sign(
        message("cdn.example.net.", &[], &[add_txt(CHALLENGE, "tok")]),
        "acme",
        SECRET,
        NOW,
    );
    let p = run(&e, &m, &mut cache);
    assert_eq!((p.rcode, p.result), (rcode::NOERROR, UpdateResult::Applied));
    let (zone, serial, entry) = p.change.expect("a change");
    assert_eq!(serial, 8);
    assert!(zone.rrset(&wire(CHALLENGE), TXT).is_some());
    assert!(
        entry.starts_with("add ") && entry.ends_with("serial 8\n"),
        "{entry}"
    );
    assert_eq!(tsig_error(&p.response.expect("signed")), 0);
    let p = run(&e, &m, &mut cache);
    assert_eq!((p.rcode, p.result), (rcode::NOTAUTH, UpdateResult::NotAuth));
    assert!(p.change.is_none());
    assert_eq!(tsig_error(&p.response.expect("signed")), rcode::BADTIME);
}

#[test]
fn bad_signatures_times_and_keys_change_nothing() {
    let e = engine();
    let mut cache = ReplayCache::default();
    let body = message("cdn.example.net.", &[], &[add_txt(CHALLENGE, "tok")]);
    let cases = [
        (
            sign(body.clone(), "acme", SECRET, NOW - 301),
            rcode::NOTAUTH,
            Some(rcode::BADTIME),
        ),
        (
            sign(body.clone(), "acme", SECRET, NOW + 301),
            rcode::NOTAUTH,
            Some(rcode::BADTIME),
        ),
        (
            sign(body.clone(), "acme", b"another secret", NOW),
            rcode::NOTAUTH,
            Some(rcode::BADSIG),
        ),
        (
            sign(body.clone(), "other", SECRET, NOW),
            rcode::NOTAUTH,
            Some(rcode::BADKEY),
        ),
        (body.clone(), rcode::REFUSED, None),
    ];
    for (m, rc, error) in cases {
        let p = run(&e, &m, &mut cache);
        assert_eq!(p.rcode, rc, "{error:?}");
        assert!(p.change.is_none());
        if let Some(error) = error {
            assert_eq!(tsig_error(&p.response.expect("a response")), error);
        }
    }
    // A changed byte after signing: BADSIG.
    let mut m = sign(body, "acme", SECRET, NOW);
    let last_txt_byte = m.len() - 1 - rr("acme.", TYPE_TSIG, CLASS_ANY, 0, &[0; 61]).len() - 1;
    m[last_txt_byte] ^= 1;
    let p = run(&e, &m, &mut cache);
    assert_eq!(p.rcode, rcode::NOTAUTH);
    assert_eq!(tsig_error(&p.response.expect("a response")), rcode::BADSIG);
}

#[test]
fn policy_zone_and_prerequisites() {
    let e = engine();
    let mut cache = ReplayCache::default();
    let mut time = NOW;
    let mut ask = |zone: &str, pre: &[Vec<u8>], up: &[Vec<u8>]| {
        time += 1;
        let p = run(
            &e,
            &sign(message(zone, pre, up), "acme", SECRET, time),
            &mut cache,
        );
        (p.rcode, p.change.is_some())
    };
    let nothing: &[Vec<u8>] = &[];
    // Names and types the key may not change.
    assert_eq!(
        ask(
            "cdn.example.net.",
            nothing,
            &[add_txt("www.cdn.example.net.", "x")]
        ),
        (rcode::REFUSED, false)
    );
    assert_eq!(
        ask(
            "cdn.example.net.",
            nothing,
            &[rr(CHALLENGE, 1, CLASS_IN, 60, &[1, 2, 3, 4])]
        ),
        (rcode::REFUSED, false)
    );
    // Another zone, a name outside ours.
    assert_eq!(
        ask("example.org.", nothing, &[add_txt(CHALLENGE, "x")]),
        (rcode::NOTAUTH, false)
    );
    assert_eq!(
        ask(
            "cdn.example.net.",
            nothing,
            &[add_txt("_acme-challenge.example.org.", "x")]
        ),
        (rcode::NOTZONE, false)
    );
    // Prerequisites: name in use / not in use, RRset exists.
    let in_use = |n: &str| rr(n, TYPE_ANY, CLASS_ANY, 0, &[]);
    let not_in_use = |n: &str| rr(n, TYPE_ANY, CLASS_NONE, 0, &[]);
    let add = [add_txt(CHALLENGE, "x")];
    assert_eq!(
        ask("cdn.example.net.", &[in_use(CHALLENGE)], &add),
        (rcode::NXDOMAIN, false)
    );
    assert_eq!(
        ask(
            "cdn.example.net.",
            &[not_in_use("www.cdn.example.net.")],
            &add
        ),
        (rcode::YXDOMAIN, false)
    );
    assert_eq!(
        ask(
            "cdn.example.net.",
            &[rr(CHALLENGE, TXT, CLASS_ANY, 0, &[])],
            &add
        ),
        (rcode::NXRRSET, false)
    );
    assert_eq!(
        ask(
            "cdn.example.net.",
            &[rr("www.cdn.example.net.", 1, CLASS_NONE, 0, &[])],
            &add
        ),
        (rcode::YXRRSET, false)
    );
    // A prerequisite with a TTL: FORMERR.
    assert_eq!(
        ask(
            "cdn.example.net.",
            &[rr(CHALLENGE, TYPE_ANY, CLASS_ANY, 5, &[])],
            &add
        ),
        (rcode::FORMERR, false)
    );
    // All met: applied. Deleting what is not there: NOERROR, no change.
    assert_eq!(
        ask("cdn.example.net.", &[not_in_use(CHALLENGE)], &add),
        (rcode::NOERROR, true)
    );
    assert_eq!(
        ask(
            "cdn.example.net.",
            nothing,
            &[rr(CHALLENGE, TXT, CLASS_ANY, 0, &[])]
        ),
        (rcode::NOERROR, false)
    );
}

#[test]
fn nothing_below_a_delegation_is_ours_to_change() {
    let base = engine();
    let mut statics = base.config().statics.clone();
    let at = Origin {
        file: "test".to_owned(),
        line: 1,
    };
    statics.add(
        wire("lab.cdn.example.net."),
        zone::TYPE_NS,
        60,
        wire("ns.example.org."),
        at,
    );
    let e = base.with_zone(statics, 7);
    let mut cache = ReplayCache::default();
    let owner = "_acme-challenge.x.lab.cdn.example.net.";
    let m = sign(
        message("cdn.example.net.", &[], &[add_txt(owner, "tok")]),
        "acme",
        SECRET,
        NOW,
    );
    let p = run(&e, &m, &mut cache);
    assert_eq!((p.rcode, p.result), (rcode::REFUSED, UpdateResult::Refused));
    assert!(p.change.is_none());
}

#[test]
fn malformed_updates_are_formerr_and_responses_are_never_dropped() {
    let e = engine();
    let mut cache = ReplayCache::default();
    let m = sign(
        message("cdn.example.net.", &[], &[add_txt(CHALLENGE, "tok")]),
        "acme",
        SECRET,
        NOW,
    );
    for cut in 12..m.len() {
        let p = run(&e, &m[..cut], &mut cache);
        assert!(p.response.is_some(), "cut at {cut}");
        assert!(p.change.is_none(), "cut at {cut}");
        assert_eq!(p.rcode, rcode::FORMERR, "cut at {cut}");
    }
    let mut response = m.clone();
    response[2] |= 0x80;
    assert!(
        run(&e, &response, &mut cache).response.is_none(),
        "QR=1 is not a request"
    );
}
