//! What a compile reports: its progress as it goes, and why it failed. Apart from
//! [`crate::compile`] so the database reader ([`crate::geo`]) reports without depending
//! on the compiler that calls it.
use std::path::PathBuf;

/// Where [`crate::Compiled::build`] is; the CLI prints it as a progress line.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Progress {
    pub stage: ProgressStage,
    /// The database being read (for [`ProgressStage::Reading`]).
    pub path: Option<PathBuf>,
    /// Networks read so far from this database.
    pub networks: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressStage {
    /// Walking a database; called every 65 536 networks and once at its end.
    Reading,
    /// Overlaying the databases and config CIDRs, assigning regions, merging.
    Combining,
}

/// Why the databases could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable MaxMind DB")]
    Database {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    #[error(
        "{path}: none of its {networks} networks has the field `{field}`: check geoip.country_field / geoip.asn_field"
    )]
    FieldNotFound {
        path: PathBuf,
        field: String,
        networks: u64,
    },
    #[error(transparent)]
    Bgp(#[from] crate::bgp::BgpError),
    #[error("{count} database files: at most {max} are supported")]
    TooManyDatabases { count: usize, max: usize },
    #[error("{regions} regions: more than the {max} a u16 region id can name")]
    TooManyRegions { regions: usize, max: usize },
}
