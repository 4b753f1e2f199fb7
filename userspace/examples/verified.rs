//! Prints how many instructions the verifier processed per program (budget: 1M each),
//! with the defences as an object holds them (RRL off) and with RRL and the served
//! address check on (the read-only globals are constants to the verifier, so the
//! two are verified differently).
fn main() {
    let mut on = geodns_common::Defence::DEFAULT;
    on.rrl_interval_ns = 5_000_000;
    on.rrl_burst_ns = 1_000_000_000;
    on.served_check = 1;
    on.served_v4_count = 2;
    on.served_v6_count = 2;
    for (what, rrl_on) in [("RRL off", false), ("RRL on", true)] {
        let defence = if rrl_on {
            on
        } else {
            geodns_common::Defence::DEFAULT
        };
        let mut x = geodns::loader::KernelProgram::load(&geodns::loader::LoadOptions {
            defence,
            ..geodns::loader::LoadOptions::default()
        })
        .expect("load");
        println!("{what}:");
        for name in geodns_common::PROGRAM_NAMES {
            println!("  {name}: {:?}", x.verified_insns(name).expect("info"));
        }
    }
}
