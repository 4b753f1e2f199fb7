//! The authoritative server's query handler: bytes in, a response or a drop out. Every
//! response is re-parsed by hickory-proto and by our own parser and checked against
//! the query (`geodns::authoritative::check`): parse -> encode -> re-parse.
//!
//! The engine is the demo config (`examples/demo.toml` and its databases), so queries
//! reach geo answers, the fallback round robin, glue, NODATA and NXDOMAIN. Each input
//! is asked from three clients: IPv4 over UDP (a geo region), IPv6 over TCP, and an
//! address in no database over UDP (the fallback).
#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{Arc, LazyLock},
};

use geodns::authoritative::{check::check_response, handle, Transport};
use geodns_maps::{Compiled, Config, Engine, NodeStates, SplitMix};
use libfuzzer_sys::fuzz_target;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
    let config = Config::from_path(&path).expect("the demo config parses");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("the demo config compiles");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
        .with_picker(Box::new(SplitMix::seeded(1)))
});

const CLIENTS: [(IpAddr, Transport); 3] = [
    (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), Transport::Udp),
    (
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        Transport::Tcp,
    ),
    (IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), Transport::Udp),
];

fuzz_target!(|data: &[u8]| {
    for (peer, transport) in CLIENTS {
        let out = handle(&ENGINE, data, peer, transport);
        match &out.response {
            Some(response) => {
                if let Err(e) = check_response(data, response, transport) {
                    panic!("{e}: query {data:02x?} response {response:02x?}");
                }
            }
            None => assert!(out.dropped.is_some(), "no response and no drop reason"),
        }
    }
});
