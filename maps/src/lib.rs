//! `geodns-maps`: config + `GeoIP` databases -> the exact contents of the kernel maps, and
//! the same decision in userspace (fallback server, HTTP redirector, `geodns lookup`).
//!
//! Pure, safe Rust with no aya dependency. The kernel only indexes what this crate
//! computes; [`Engine::resolve`] must give the same answer the XDP program gives from
//! [`KernelMaps`].
//!
//! PUBLIC API CONTRACT (used by `userspace/` and `tests/`; keep these names and shapes):
//!
//! - `Config::from_path(&Path) -> Result<Config, ConfigError>`; `Config::from_str_named(text, name)`.
//! - `Compiled::build(&Config, &mut dyn FnMut(Progress)) -> Result<Compiled, CompileError>`
//!   reads the `GeoIP` databases named by the config, assigns dense region ids (0 = address
//!   in no database), and keeps merged v4/v6 prefix lists covering the whole address
//!   space (gaps are filled with region 0 so every address has an exact ECS scope).
//! - `NodeStates` (name -> `NodeState`), built from the config's admin states; health
//!   and admin commands change it.
//! - `Engine::new(Arc<Config>, Arc<Compiled>, &NodeStates) -> Engine`: answer sets for
//!   every (record, region); cheap to rebuild on a node-state change
//!   (`engine.with_states(&states)` reuses the compiled prefixes).
//! - `engine.resolve(&Question) -> Resolution`: the whole DNS decision except wire work.
//! - `engine.explain(IpAddr, ecs: Option<(IpAddr, u8)>) -> Explanation` (serde-serializable).
//! - `engine.kernel_maps() -> KernelMaps` (prefixes, names, answers exactly as the maps hold them).
//! - `mmdb::Writer` (feature `testkit`): a small `MaxMind` DB writer for tests, the demo
//!   and the bench.
//! - `diff::Table::from_engine(&Engine, source, config)`, `diff::diff(&old, &new, top)`:
//!   what a change of table does to answers (`geodns diff`).
//!
//! # Region keys and their precedence
//!
//! A map (`[maps.NAME]`) maps region keys to candidate nodes. For one client address each
//! map picks exactly one key, the first that applies in this order:
//!
//! 1. a CIDR written in the config (`"198.51.100.0/24"`, `"2001:db8::/32"`); among nested
//!    CIDRs of the same map the most specific wins;
//! 2. an AS number (`"AS13335"`): the BGP origin of the longest prefix holding the
//!    address in the `[bgp]` RIB dumps ([`bgp`]), then the ASN database's number (not
//!    with `as_keys = "bgp-only"`);
//! 3. a country (`"US"`, or `"country:US"`), ISO 3166-1 alpha-2, from the country database;
//! 4. a continent (`"continent:EU"`), from the continent field of the country database;
//! 5. `"default"`.
//!
//! Continents need the `continent:` prefix because their codes collide with countries
//! (`AS` is American Samoa and Asia, `AF` Afghanistan and Africa, `NA`, `SA`, ...).
//! An address in no database, no BGP prefix and no config CIDR is region 0: no map applies, and the
//! `[fallback]` nodes answer.
//!
//! # Regions and prefixes
//!
//! A region is the tuple of the key every map picks, so two networks share a region iff
//! every map treats them alike; ids are dense `u16`s that depend on the config's maps and
//! the databases, never on records or node states (a node going down rewrites only the
//! small answer table). The compiled prefixes partition each address space (see
//! [`compile`]): they never overlap, so the matched prefix length is an exact ECS scope.
//! IPv4 networks come from the database's IPv4 tree only. `MaxMind`'s IPv6 aliases of it
//! (`::ffff:0:0/96`, `2001::/32`, `2002::/16`) are detected in each database's tree;
//! where every database has one (and no config CIDR key overlaps it), a client in the
//! range is looked up as its embedded IPv4 address with the IPv4 prefix moved into the
//! range as its scope ([`Compiled::lookup`]; the kernel does the same from the flags the
//! loader sets), and the IPv6 table holds the range as one region-0 prefix of its own.
//! Otherwise the range, like `::/96`, is in no database in the IPv6 table.
//!
//! # Answers
//!
//! Per (record, region) an [`geodns_common::AnswerSet`]: `best` holds every address of
//! the up candidate with the highest weight (ties: node name) that has the family;
//! `spread` holds one slot per address of every up candidate, highest weights first, up
//! to [`geodns_common::MAX_ANSWER_ADDRS`], each with its node's weight. Down and
//! draining nodes are left out. A region whose map offers no up candidate has no kernel
//! entry: the kernel passes and [`Engine::resolve`] answers from `[fallback]` by smooth
//! weighted round robin (per family, one node's addresses per answer), failing open to
//! all fallback nodes when none is up. Names: the exact name first, then the wildcard
//! `*.` of the name minus its first label (one level, as the kernel does).

pub mod bgp;
mod cidr;
pub mod compile;
pub mod config;
pub mod defence;
pub mod diff;
pub mod engine;
pub mod fastpath;
mod geo;
pub mod image;
#[cfg(feature = "testkit")]
pub mod mmdb;
#[cfg(feature = "testkit")]
pub mod mrt;
pub mod name;
mod partition;
mod report;
mod rng;
pub mod slots;
mod state;
pub mod zone;

pub use cidr::{Cidr, CidrParseError};
pub use compile::{
    AddressFacts, CompileError, CompileStats, CompileWarning, Compiled, FamilyStats, PrefixMatch,
    Progress, ProgressStage, Shrink,
};
pub use config::{
    Candidate, Config, ConfigError, ConfigProblem, ConfigWarning, Fleet, GeoIp, Map, NodeConfig,
    NsHost, Policy, Quorum, Record, RegionKey, Rule, Zone,
};
pub use engine::{
    AliasLookup, AnswerSource, Engine, Explanation, KernelMaps, KernelSizes, NodeState, NodeStates,
    Picker, Question, Quick, QuickAddrs, Resolution, SplitMix,
};
