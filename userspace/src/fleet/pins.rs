//! Database pins (`[geoip.sha256]`): the files a config reads and their SHA-256.

use std::path::PathBuf;

use geodns_maps::Config;

/// Every database file of `config`.
#[must_use]
pub fn database_files(config: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config
        .geoip
        .iter()
        .flat_map(|g| g.country.iter().chain(&g.asn).chain(&g.city))
        .cloned()
        .collect();
    files.sort();
    files.dedup();
    files
}

/// SHA-256 of `bytes`.
#[must_use]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks the databases `config` pins (`[geoip.sha256]`) against the files: a file
/// that differs is an error naming it and both digests.
pub fn check_pins(config: &Config) -> Result<(), String> {
    let Some(g) = &config.geoip else {
        return Ok(());
    };
    for (path, want) in &g.sha256 {
        let bytes = std::fs::read(path).map_err(|e| format!("database {}: {e}", path.display()))?;
        let got = sha256(&bytes);
        if &got != want {
            return Err(format!(
                "database {}: its SHA-256 is {}, the config pins {}",
                path.display(),
                hex(&got),
                hex(want)
            ));
        }
    }
    Ok(())
}
