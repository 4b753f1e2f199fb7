//! Loads the XDP program, fills its maps, flips generations, reads counters.
//!
//! The maps that say what to answer exist twice (generation 0 and 1). [`XdpDns::install`]
//! writes the idle generation (only the entries that differ from what it held), then
//! flips `STATE.generation` with one array update: a packet sees the whole old table or
//! the whole new one, never a mix, and answering never pauses.
use std::{
    collections::HashMap as StdHashMap,
    hash::Hash,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, ProgramArray},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader, Pod,
};
use geodns_common::{
    counter, AnswerKey, AnswerSet, NameEntry, PrefixValue, RuntimeState, DEFAULT_DNS_PORT,
    FAST_BLOCK_WORDS, STAGE_GROW, STAGE_LOOKUP_0, STAGE_REPLY_0,
};
use geodns_maps::fastpath::{FastFamily, FastPathError, FastTable, PoolSizes, BLOCK_SLOTS};

/// Errors of loading and filling the kernel maps.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    #[error("loading the XDP object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the XDP object has no {kind} named {name}")]
    Missing { kind: &'static str, name: String },
    #[error("map {map}: {op}: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("program {program}: {op}: {source}")]
    Program {
        program: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {map}: mmap: {source}")]
    Mmap {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fast path: {0}")]
    FastPath(#[source] FastPathError),
    #[error("map {map} holds at most {max} entries, the new table needs {needed}")]
    TooBig {
        map: &'static str,
        max: u32,
        needed: usize,
    },
}

/// Capacity of each map; fixed at load time, so size them for the biggest table a
/// reload may bring.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    pub prefixes_v4: u32,
    pub prefixes_v6: u32,
    pub names: u32,
    pub answers: u32,
    /// Pool blocks (256 slots, 512 bytes each) of the fast path, per family.
    pub fast_v4_blocks: u32,
    pub fast_v6_blocks: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        // The tries and hashes are not preallocated: a large cap costs nothing until
        // used. The fast-path arrays are (they are memory-mapped).
        Self {
            prefixes_v4: 2 << 20,
            prefixes_v6: 2 << 20,
            names: 4096,
            answers: 65536,
            // The real GeoLite2 table splits 19,410 /24s.
            fast_v4_blocks: 24_576,
            fast_v6_blocks: 32_768,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub dns_port: u16,
    pub sizes: MapSizes,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dns_port: DEFAULT_DNS_PORT,
            sizes: MapSizes::default(),
        }
    }
}

/// Everything the kernel needs to answer, one generation's worth: exactly what
/// `geodns_maps::Engine::kernel_maps` computes.
pub use geodns_maps::engine::KernelMaps as Contents;

/// What one generation of the maps holds, mirrored in userspace so a reload writes only
/// the differences and removes stale entries without walking the kernel maps.
#[derive(Default)]
struct Mirror {
    v4: StdHashMap<([u8; 4], u8), PrefixValue>,
    v6: StdHashMap<([u8; 16], u8), PrefixValue>,
    names: StdHashMap<u64, NameEntry>,
    answers: StdHashMap<AnswerKey, AnswerSet>,
}

/// Statistics of one [`XdpDns::install`].
#[derive(Clone, Copy, Debug, Default)]
pub struct InstallStats {
    pub generation: u32,
    pub written: usize,
    pub removed: usize,
    /// Time to compute the fast-path slots and copy them into the maps.
    pub fast_seconds: f64,
    /// Fast-path pool blocks in use, and blocks that did not fit (their slots ask the
    /// trie), per family.
    pub fast_blocks_v4: usize,
    pub fast_blocks_v6: usize,
    pub fast_overflow: usize,
}

/// The loaded program and its maps.
pub struct XdpDns {
    ebpf: Ebpf,
    /// Taken out of `ebpf` to fill it; held so the stages stay linked.
    _jump: ProgramArray<MapData>,
    state: RuntimeState,
    mirrors: [Mirror; 2],
    sizes: MapSizes,
    installed_once: bool,
}

/// The name of a generation's copy of a map (`PREFIX_V4` -> `PREFIX_V4_1`), as listed
/// in the contract (the build checks the object has all of them).
fn gen_name(base: &'static str, generation: u32) -> &'static str {
    let want = format!("{base}_{}", generation & 1);
    geodns_common::MAP_NAMES
        .iter()
        .find(|n| **n == want)
        .copied()
        .unwrap_or_else(|| panic!("{want} is not in common::MAP_NAMES"))
}

impl XdpDns {
    /// Loads the embedded object with the loader-set globals and map sizes, and loads
    /// (verifies) both programs. Nothing is attached yet.
    pub fn load(options: &LoadOptions) -> Result<Self, LoaderError> {
        Self::load_object(crate::XDP_OBJECT, options)
    }

    /// As [`XdpDns::load`], from any object bytes (tests use it with broken objects).
    pub fn load_object(object: &[u8], options: &LoadOptions) -> Result<Self, LoaderError> {
        let sizes = options.sizes;
        let mut loader = EbpfLoader::new();
        loader.override_global("DNS_PORT", &options.dns_port, true);
        for generation in 0..2 {
            loader.map_max_entries(gen_name("PREFIX_V4", generation), sizes.prefixes_v4);
            loader.map_max_entries(gen_name("PREFIX_V6", generation), sizes.prefixes_v6);
            loader.map_max_entries(gen_name("NAMES", generation), sizes.names);
            loader.map_max_entries(gen_name("ANSWERS", generation), sizes.answers);
            loader.map_max_entries(
                gen_name("FAST_V4_POOL", generation),
                sizes.fast_v4_blocks.max(1) * FAST_BLOCK_WORDS,
            );
            loader.map_max_entries(
                gen_name("FAST_V6_POOL", generation),
                sizes.fast_v6_blocks.max(1) * FAST_BLOCK_WORDS,
            );
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| LoaderError::Load(Box::new(e)))?;
        for name in geodns_common::PROGRAM_NAMES {
            let program = xdp_program(&mut ebpf, name)?;
            program.load().map_err(|e| LoaderError::Program {
                program: name,
                op: "load (verifier)",
                source: Box::new(e),
            })?;
        }
        let jump = link_stages(&mut ebpf)?;
        Ok(Self {
            ebpf,
            _jump: jump,
            state: RuntimeState::default(),
            mirrors: [Mirror::default(), Mirror::default()],
            sizes,
            installed_once: false,
        })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, LoaderError> {
        self.ebpf.map_mut(name).ok_or(LoaderError::Missing {
            kind: "map",
            name: name.to_string(),
        })
    }

    fn map(&self, name: &'static str) -> Result<&Map, LoaderError> {
        self.ebpf.map(name).ok_or(LoaderError::Missing {
            kind: "map",
            name: name.to_string(),
        })
    }

    /// The program's XDP handle (`xdp_dns` or `xdp_pass`), e.g. to attach it.
    pub fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, LoaderError> {
        xdp_program(&mut self.ebpf, name)
    }

    /// Instructions the verifier processed for a program (its budget is 1M).
    pub fn verified_insns(&mut self, name: &'static str) -> Result<Option<u32>, LoaderError> {
        let program = self.program_mut(name)?;
        let info = program.info().map_err(|e| LoaderError::Program {
            program: name,
            op: "info",
            source: Box::new(e),
        })?;
        Ok(info.verified_instruction_count())
    }

    /// Raw fd of a program, for `BPF_PROG_TEST_RUN`.
    pub fn program_fd(&mut self, name: &'static str) -> Result<i32, LoaderError> {
        let program = self.program_mut(name)?;
        let fd = program.fd().map_err(|e| LoaderError::Program {
            program: name,
            op: "fd",
            source: Box::new(e),
        })?;
        Ok(fd.as_fd().as_raw_fd())
    }

    /// Attaches `xdp_dns` to an interface (of the calling thread's network namespace).
    pub fn attach(&mut self, if_index: u32, mode: XdpMode) -> Result<(), LoaderError> {
        self.attach_program("xdp_dns", if_index, mode)
    }

    /// Attaches one of the object's programs (`xdp_dns` or `xdp_pass`) to an interface.
    pub fn attach_program(
        &mut self,
        name: &'static str,
        if_index: u32,
        mode: XdpMode,
    ) -> Result<(), LoaderError> {
        let program = self.program_mut(name)?;
        program
            .attach_to_if_index(if_index, mode)
            .map_err(|e| LoaderError::Program {
                program: name,
                op: "attach",
                source: Box::new(e),
            })?;
        Ok(())
    }

    /// The generation the kernel currently reads.
    #[must_use]
    pub fn generation(&self) -> u32 {
        self.state.generation
    }

    /// Sets run-time flags (`STATE_FLAG_*`) without touching the tables.
    pub fn set_flags(&mut self, flags: u32) -> Result<(), LoaderError> {
        let mut state = self.state;
        state.flags = flags;
        self.write_state(state)
    }

    fn write_state(&mut self, state: RuntimeState) -> Result<(), LoaderError> {
        let mut array: Array<&mut MapData, RuntimeState> = Array::try_from(self.map_mut("STATE")?)
            .map_err(|source| LoaderError::Map {
                map: "STATE",
                op: "open",
                source,
            })?;
        array.set(0, state, 0).map_err(|source| LoaderError::Map {
            map: "STATE",
            op: "set",
            source,
        })?;
        self.state = state;
        Ok(())
    }

    /// Writes `contents` into the idle generation and switches the kernel to it with one
    /// update. On error the kernel keeps reading the old generation, untouched.
    pub fn install(&mut self, contents: &Contents) -> Result<InstallStats, LoaderError> {
        self.check_sizes(contents)?;
        // Before the first install both generations are empty: fill generation 0 and
        // "switch" to it, so the kernel never reads an empty generation after an install.
        let target = if self.installed_once {
            1 - self.state.generation
        } else {
            self.state.generation
        };
        let mut stats = InstallStats {
            generation: target,
            ..InstallStats::default()
        };
        let mut mirror = std::mem::take(&mut self.mirrors[target as usize]);
        let result = self.write_generation(target, contents, &mut mirror, &mut stats);
        self.mirrors[target as usize] = mirror;
        result?;
        let mut next = self.state;
        next.generation = target;
        self.write_state(next)?;
        self.installed_once = true;
        Ok(stats)
    }

    fn check_sizes(&self, c: &Contents) -> Result<(), LoaderError> {
        for (map, max, needed) in [
            ("PREFIX_V4", self.sizes.prefixes_v4, c.prefixes_v4.len()),
            ("PREFIX_V6", self.sizes.prefixes_v6, c.prefixes_v6.len()),
            ("NAMES", self.sizes.names, c.names.len()),
            ("ANSWERS", self.sizes.answers, c.answers.len()),
        ] {
            if needed > max as usize {
                return Err(LoaderError::TooBig { map, max, needed });
            }
        }
        Ok(())
    }

    fn write_generation(
        &mut self,
        generation: u32,
        c: &Contents,
        mirror: &mut Mirror,
        stats: &mut InstallStats,
    ) -> Result<(), LoaderError> {
        let v4 = c.prefixes_v4.iter().map(|(a, l, v)| ((*a, *l), *v));
        sync_lpm(
            self.map_mut(gen_name("PREFIX_V4", generation))?,
            gen_name("PREFIX_V4", generation),
            &mut mirror.v4,
            v4,
            stats,
        )?;
        let v6 = c.prefixes_v6.iter().map(|(a, l, v)| ((*a, *l), *v));
        sync_lpm(
            self.map_mut(gen_name("PREFIX_V6", generation))?,
            gen_name("PREFIX_V6", generation),
            &mut mirror.v6,
            v6,
            stats,
        )?;
        sync_hash(
            self.map_mut(gen_name("NAMES", generation))?,
            gen_name("NAMES", generation),
            &mut mirror.names,
            c.names.iter().map(|(k, v)| k.entry(*v)),
            stats,
        )?;
        sync_hash(
            self.map_mut(gen_name("ANSWERS", generation))?,
            gen_name("ANSWERS", generation),
            &mut mirror.answers,
            c.answers.iter().copied(),
            stats,
        )?;
        self.write_fast(generation, c, stats)
    }

    /// Computes the fast-path slots (maps/ does) and copies them into the idle
    /// generation's memory-mapped arrays.
    fn write_fast(
        &mut self,
        generation: u32,
        c: &Contents,
        stats: &mut InstallStats,
    ) -> Result<(), LoaderError> {
        let started = std::time::Instant::now();
        let table = FastTable::build(
            &c.prefixes_v4,
            &c.prefixes_v6,
            PoolSizes {
                v4_blocks: self.sizes.fast_v4_blocks as usize,
                v6_blocks: self.sizes.fast_v6_blocks as usize,
            },
        )
        .map_err(LoaderError::FastPath)?;
        for (base, words) in [
            ("FAST_V4_TOP", FastFamily::pack(&table.v4.top)),
            ("FAST_V4_POOL", FastFamily::pack(&table.v4.pool)),
            ("FAST_V6_TOP", FastFamily::pack(&table.v6.top)),
            ("FAST_V6_POOL", FastFamily::pack(&table.v6.pool)),
        ] {
            let name = gen_name(base, generation);
            fill_mmap(self.map(name)?, name, &words)?;
        }
        let name = gen_name("FAST_LEAVES", generation);
        let mut leaves: Array<&mut MapData, PrefixValue> = Array::try_from(self.map_mut(name)?)
            .map_err(|source| LoaderError::Map {
                map: name,
                op: "open",
                source,
            })?;
        for (i, leaf) in table.leaves.iter().enumerate().skip(1) {
            let index = u32::try_from(i)
                .map_err(|_| LoaderError::FastPath(FastPathError::TooManyLeaves))?;
            leaves
                .set(index, leaf, 0)
                .map_err(|source| LoaderError::Map {
                    map: name,
                    op: "set",
                    source,
                })?;
        }
        stats.fast_blocks_v4 = table.v4.pool.len() / BLOCK_SLOTS;
        stats.fast_blocks_v6 = table.v6.pool.len() / BLOCK_SLOTS;
        stats.fast_overflow = table.v4.overflow_blocks + table.v6.overflow_blocks;
        stats.fast_seconds = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Node-state changes: rewrites answer sets of the generation in use, in place (each
    /// entry update is atomic for readers). `None` removes the entry (the kernel then
    /// passes that region's queries to userspace).
    pub fn update_answers(
        &mut self,
        changes: &[(AnswerKey, Option<AnswerSet>)],
    ) -> Result<usize, LoaderError> {
        let generation = self.state.generation;
        let name = gen_name("ANSWERS", generation);
        let mut mirror = std::mem::take(&mut self.mirrors[generation as usize].answers);
        let result = (|| {
            let mut map: HashMap<&mut MapData, AnswerKey, AnswerSet> =
                HashMap::try_from(self.map_mut(name)?).map_err(|source| LoaderError::Map {
                    map: name,
                    op: "open",
                    source,
                })?;
            for (key, value) in changes {
                match value {
                    Some(v) => {
                        map.insert(key, v, 0).map_err(|source| LoaderError::Map {
                            map: name,
                            op: "insert",
                            source,
                        })?;
                        mirror.insert(*key, *v);
                    }
                    None => {
                        if mirror.remove(key).is_some() {
                            map.remove(key).map_err(|source| LoaderError::Map {
                                map: name,
                                op: "remove",
                                source,
                            })?;
                        }
                    }
                }
            }
            Ok(changes.len())
        })();
        self.mirrors[generation as usize].answers = mirror;
        result
    }

    /// Pins every map under `dir` (on a BPF filesystem), so `geodns stats` and
    /// `geodns lookup --live` can read the live state from another process.
    pub fn pin(&mut self, dir: &std::path::Path) -> Result<(), LoaderError> {
        std::fs::create_dir_all(dir).map_err(|source| LoaderError::Pin {
            path: dir.to_path_buf(),
            source: std::io::Error::other(source),
        })?;
        for (name, map) in self.ebpf.maps() {
            // Only the contract's maps; not internal ones such as .rodata.
            if !geodns_common::MAP_NAMES.contains(&name) {
                continue;
            }
            if let Some(data) = map_data(map) {
                let path = dir.join(name);
                data.pin(&path).map_err(|e| LoaderError::Pin {
                    path,
                    source: std::io::Error::other(e),
                })?;
            }
        }
        Ok(())
    }

    /// Kernel memory charged to each of the object's maps (the `memlock` of its fd in
    /// /proc/self/fdinfo), in bytes, by map name.
    pub fn memlock_by_map(&self) -> std::io::Result<Vec<(String, u64)>> {
        // (JUMP, a 3-entry program array, is left out: aya gives no fd for it.)
        let mut out = Vec::new();
        for (name, map) in self.ebpf.maps() {
            let Some(data) = map_data(map) else { continue };
            let fd = data.fd().as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
            let bytes = info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            out.push((name.to_string(), bytes));
        }
        Ok(out)
    }

    /// Kernel memory charged to all of the object's maps, in bytes.
    pub fn memlock_bytes(&self) -> std::io::Result<u64> {
        Ok(self.memlock_by_map()?.iter().map(|(_, b)| b).sum())
    }

    /// Counters summed over CPUs, indexed by `geodns_common::counter`.
    pub fn counters(&self) -> Result<[u64; counter::COUNT as usize], LoaderError> {
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map("COUNTERS")?)
            .map_err(|source| LoaderError::Map {
                map: "COUNTERS",
                op: "open",
                source,
            })?;
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = array
                .get(&u32::try_from(i).unwrap_or(0), 0)
                .map_err(|source| LoaderError::Map {
                    map: "COUNTERS",
                    op: "get",
                    source,
                })?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }

    /// Looks a client address up in the kernel's prefix trie of the generation in use
    /// (for `geodns lookup --live` and tests).
    pub fn kernel_prefix_v4(&self, addr: [u8; 4]) -> Result<Option<PrefixValue>, LoaderError> {
        let name = gen_name("PREFIX_V4", self.state.generation);
        let trie: LpmTrie<&MapData, [u8; 4], PrefixValue> = LpmTrie::try_from(self.map(name)?)
            .map_err(|source| LoaderError::Map {
                map: name,
                op: "open",
                source,
            })?;
        Ok(trie.get(&Key::new(32, addr), 0).ok())
    }
}

fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::ProgramArray(d) => Some(d),
        _ => None,
    }
}

/// Copies `words` to the start of a `BPF_F_MMAPABLE` array through a shared mapping:
/// one copy instead of one syscall per slot.
fn fill_mmap(map: &Map, name: &'static str, words: &[u64]) -> Result<(), LoaderError> {
    let Map::Array(data) = map else {
        return Err(LoaderError::Missing {
            kind: "array map",
            name: name.to_string(),
        });
    };
    let info = data.info().map_err(|source| LoaderError::Map {
        map: name,
        op: "info",
        source,
    })?;
    let entries = info.max_entries() as usize;
    if words.len() > entries {
        return Err(LoaderError::TooBig {
            map: name,
            max: info.max_entries(),
            needed: words.len(),
        });
    }
    let len = entries * 8;
    let fd = data.fd().as_fd().as_raw_fd();
    // SAFETY: a shared read-write mapping of the array's `len` bytes (the kernel
    // allows it for BPF_F_MMAPABLE arrays); unmapped below, never aliased.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if ptr == libc::MAP_FAILED {
            return Err(LoaderError::Mmap {
                map: name,
                source: std::io::Error::last_os_error(),
            });
        }
        std::ptr::copy_nonoverlapping(words.as_ptr(), ptr.cast::<u64>(), words.len());
        libc::munmap(ptr, len);
    }
    Ok(())
}

/// One of the object's XDP programs by name.
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, LoaderError> {
    ebpf.program_mut(name)
        .ok_or(LoaderError::Missing {
            kind: "program",
            name: name.to_string(),
        })?
        .try_into()
        .map_err(|e| LoaderError::Program {
            program: name,
            op: "type",
            source: Box::new(e),
        })
}

/// Puts the lookup and reply stages into the `JUMP` program array the first stage
/// tail-calls through.
fn link_stages(ebpf: &mut Ebpf) -> Result<ProgramArray<MapData>, LoaderError> {
    let map = ebpf.take_map("JUMP").ok_or(LoaderError::Missing {
        kind: "map",
        name: "JUMP".to_string(),
    })?;
    let mut jump = ProgramArray::try_from(map).map_err(|source| LoaderError::Map {
        map: "JUMP",
        op: "open",
        source,
    })?;
    for (index, name) in [
        (STAGE_LOOKUP_0, "xdp_dns_lookup_0"),
        (STAGE_LOOKUP_0 + 1, "xdp_dns_lookup_1"),
        (STAGE_REPLY_0, "xdp_dns_reply_0"),
        (STAGE_REPLY_0 + 1, "xdp_dns_reply_1"),
        (STAGE_GROW, "xdp_dns_grow"),
    ] {
        let program = xdp_program(ebpf, name)?;
        let fd = program.fd().map_err(|e| LoaderError::Program {
            program: name,
            op: "fd",
            source: Box::new(e),
        })?;
        jump.set(index, fd, 0).map_err(|source| LoaderError::Map {
            map: "JUMP",
            op: "set",
            source,
        })?;
    }
    Ok(jump)
}

fn sync_lpm<K: Pod + Eq + Hash>(
    map: &mut Map,
    name: &'static str,
    mirror: &mut StdHashMap<(K, u8), PrefixValue>,
    entries: impl Iterator<Item = ((K, u8), PrefixValue)>,
    stats: &mut InstallStats,
) -> Result<(), LoaderError> {
    let mut trie: LpmTrie<&mut MapData, K, PrefixValue> =
        LpmTrie::try_from(map).map_err(|source| LoaderError::Map {
            map: name,
            op: "open",
            source,
        })?;
    let fresh: StdHashMap<(K, u8), PrefixValue> = entries.collect();
    for ((addr, len), value) in &fresh {
        if mirror.get(&(*addr, *len)) != Some(value) {
            trie.insert(&Key::new(u32::from(*len), *addr), *value, 0)
                .map_err(|source| LoaderError::Map {
                    map: name,
                    op: "insert",
                    source,
                })?;
            mirror.insert((*addr, *len), *value);
            stats.written += 1;
        }
    }
    let stale: Vec<(K, u8)> = mirror
        .keys()
        .filter(|k| !fresh.contains_key(k))
        .copied()
        .collect();
    for (addr, len) in stale {
        trie.remove(&Key::new(u32::from(len), addr))
            .map_err(|source| LoaderError::Map {
                map: name,
                op: "remove",
                source,
            })?;
        mirror.remove(&(addr, len));
        stats.removed += 1;
    }
    Ok(())
}

fn sync_hash<K: Pod + Eq + Hash, V: Pod + PartialEq>(
    map: &mut Map,
    name: &'static str,
    mirror: &mut StdHashMap<K, V>,
    entries: impl Iterator<Item = (K, V)>,
    stats: &mut InstallStats,
) -> Result<(), LoaderError> {
    let mut hash: HashMap<&mut MapData, K, V> =
        HashMap::try_from(map).map_err(|source| LoaderError::Map {
            map: name,
            op: "open",
            source,
        })?;
    let fresh: StdHashMap<K, V> = entries.collect();
    let stale: Vec<K> = mirror
        .keys()
        .filter(|k| !fresh.contains_key(k))
        .copied()
        .collect();
    // Remove first: a full map must have room for the new entries.
    for key in stale {
        hash.remove(&key).map_err(|source| LoaderError::Map {
            map: name,
            op: "remove",
            source,
        })?;
        mirror.remove(&key);
        stats.removed += 1;
    }
    for (key, value) in &fresh {
        if mirror.get(key) != Some(value) {
            hash.insert(key, value, 0)
                .map_err(|source| LoaderError::Map {
                    map: name,
                    op: "insert",
                    source,
                })?;
            mirror.insert(*key, *value);
            stats.written += 1;
        }
    }
    Ok(())
}

/// XDP attach mode from the CLI's `--xdp-mode`.
#[must_use]
pub fn xdp_mode(skb: bool) -> XdpMode {
    if skb {
        XdpMode::Skb
    } else {
        XdpMode::Driver
    }
}
