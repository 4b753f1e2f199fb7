//! Writes a synthetic country + ASN database (deterministic from the seed) and a config
//! for it (same path with `.toml`), for benches:
//! `cargo run --release -p geodns-maps --example synth-db -- NETWORKS SEED OUT.mmdb`
//! then `geodns compile --json --config OUT.toml`.
use std::path::PathBuf;

use geodns_maps::mmdb::synth;

fn main() {
    let mut args = std::env::args().skip(1);
    let networks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "synth.mmdb".to_owned()));
    let started = std::time::Instant::now();
    let (mut writer, stats) = synth::country_asn(networks, seed).expect("generate networks");
    writer.write_to(&out).expect("write the database");
    let file = out
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    let config = out.with_extension("toml");
    std::fs::write(&config, synth::config_toml(file)).expect("write the config");
    println!(
        "wrote {} ({} IPv4 + {} IPv6 networks) and {} in {:.2} s",
        out.display(),
        stats.networks_v4,
        stats.networks_v6,
        config.display(),
        started.elapsed().as_secs_f64()
    );
}
