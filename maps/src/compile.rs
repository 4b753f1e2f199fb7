//! Config + `GeoIP` databases -> regions and merged prefix lists.
use std::{
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use crate::{cidr::Cidr, config::Config};

/// Where [`Compiled::build`] is; the CLI prints it as a progress line.
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
    /// Walking a database; called every few thousand networks and once at the end.
    Reading,
    /// Combining the databases and config CIDRs into regions.
    Combining,
    /// Merging prefixes.
    Merging,
}

/// Why the databases could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable MaxMind DB: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    #[error("{path}: field `{field}` at {network}: {reason}")]
    Field {
        path: PathBuf,
        field: String,
        network: String,
        reason: String,
    },
    #[error("{regions} regions: more than the {max} a u16 region id can name")]
    TooManyRegions { regions: usize, max: usize },
}

/// Counts of one address family.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct FamilyStats {
    /// Networks read from the databases (each database counted).
    pub networks: u64,
    /// Prefixes needed without merging (every distinct piece of the overlaid databases
    /// and config CIDRs, gaps included).
    pub prefixes_before: u64,
    /// Prefixes after merging: what the kernel map holds.
    pub prefixes_after: u64,
}

/// What [`Compiled::build`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct CompileStats {
    pub v4: FamilyStats,
    pub v6: FamilyStats,
    pub regions: usize,
    pub elapsed: Duration,
}

/// One merged prefix of the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixMatch {
    pub prefix: Cidr,
    pub region: u16,
}

/// The compiled geo-map: dense regions and a partition of both address spaces into
/// prefixes, each labelled with a region.
#[derive(Debug)]
pub struct Compiled {
    stats: CompileStats,
}

impl Compiled {
    /// Reads the databases named by `config` and builds the prefix lists.
    pub fn build(
        config: &Config,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Self, CompileError> {
        let _ = (config, progress);
        unimplemented!()
    }

    #[must_use]
    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// Number of regions, region 0 included.
    #[must_use]
    pub fn region_count(&self) -> usize {
        unimplemented!()
    }

    /// The longest (and only) prefix containing `ip`, and its region.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> PrefixMatch {
        let _ = ip;
        unimplemented!()
    }

    /// The rule index (into `config.maps[map].rules`) that `map` chooses in `region`;
    /// `None` when the map has no rule for it (and for region 0).
    #[must_use]
    pub fn choice(&self, region: u16, map: usize) -> Option<usize> {
        let _ = (region, map);
        unimplemented!()
    }
}
