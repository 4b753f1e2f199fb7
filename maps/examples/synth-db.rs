//! Writes a synthetic country + ASN database (deterministic from the seed) for benches.
//! `cargo run --release -p geodns-maps --example synth-db -- NETWORKS SEED OUT.mmdb`
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let networks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "synth.mmdb".to_owned()));
    let started = std::time::Instant::now();
    let (mut writer, stats) =
        geodns_maps::mmdb::synth::country_asn(networks, seed).expect("generate networks");
    writer.write_to(&out).expect("write the database");
    println!(
        "wrote {} ({} IPv4 + {} IPv6 networks) in {:.2} s",
        out.display(),
        stats.networks_v4,
        stats.networks_v6,
        started.elapsed().as_secs_f64()
    );
}
