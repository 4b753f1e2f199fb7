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
//! - `mmdb::Writer`: a small `MaxMind` DB writer for tests, the demo and the bench.
