//! What runs: the package version and the commit it was built from (`build.rs`).

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (`GEODNS_COMMIT` at build time, else git's
/// HEAD, else "unknown").
pub const COMMIT: &str = env!("GEODNS_COMMIT");
/// `geodns --version`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GEODNS_COMMIT"),
    ")"
);

/// [`LONG`] as a `String`.
#[must_use]
pub fn long() -> String {
    LONG.to_owned()
}
