//! Prints how many instructions the verifier processed per program (budget: 1M each).
fn main() {
    let mut x =
        geodns::loader::XdpDns::load(&geodns::loader::LoadOptions::default()).expect("load");
    for name in geodns_common::PROGRAM_NAMES {
        println!("{name}: {:?}", x.verified_insns(name).expect("info"));
    }
}
