//! Loads the XDP program, fills its maps, flips generations, reads counters.
//!
//! The maps that say what to answer exist twice (generation 0 and 1). [`KernelProgram::install`]
//! writes the idle generation (the tries: only the entries that differ from what they
//! held; the arrays: whole, through memory mappings), then
//! flips `STATE.generation` with one array update: a packet sees the whole old table or
//! the whole new one, never a mix, and answering never pauses.
mod install;
mod mmap;

use install::table_slots;
use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData, PerCpuArray, ProgramArray},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader, Pod,
};
use geodns_common::{
    counter, Defence, PrefixValue, RuntimeState, DEFAULT_DNS_PORT, FAST_PAGE_WORDS,
    STATE_FLAG_ALIASES,
};
use geodns_maps::slots::AnswerTable;

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
    #[error("{0}")]
    Slots(#[from] geodns_maps::slots::SlotsError),
    #[error("map {map} holds at most {max} entries, the new table needs {needed}")]
    TooBig {
        map: &'static str,
        max: u32,
        needed: usize,
    },
    #[error("shadow run: {0}")]
    Shadow(&'static str),
}

/// Capacity of each map; fixed at load time, so size them for the biggest table a
/// reload may bring.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    pub prefixes_v4: u32,
    pub prefixes_v6: u32,
    /// Most names, (record, region) keys and distinct answer sets the open-addressing
    /// tables hold (their slot arrays are twice as big, rounded up to a power of two).
    pub names: u32,
    pub answers: u32,
    pub answer_sets: u32,
    /// Words (u64) of the fast path's blocks, both families together: a block of up
    /// to 8 runs takes 1 word and a word per two runs, a bigger one 5 words and a word
    /// per two runs.
    pub fast_words: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        // The tries are not preallocated: a large cap costs nothing until used. The
        // arrays are (the fast path 2 x 32.5 MiB; names, answer keys and sets 2 x 2.6 MiB).
        Self {
            // 4 Mi: `nearest` over GeoLite2-City with 20 nodes takes 2.14 Mi IPv4
            // prefixes (neighbouring networks rank differently, so fewer merge).
            prefixes_v4: 4 << 20,
            prefixes_v6: 4 << 20,
            names: 4096,
            answers: 65536,
            answer_sets: 4096,
            // 32 MiB: the 500k + 500k bench tables take 2.5 Mi words (428k IPv6
            // blocks), GeoLite2-Country 1.1 Mi.
            fast_words: 4 << 20,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub dns_port: u16,
    pub sizes: MapSizes,
    /// Rate limiting and reflection defences (the `DEFENCE` global); fixed at load.
    pub defence: Defence,
    /// Slots of the `RRL` array (rounded up to a power of two, at most 2^24).
    pub rrl_buckets: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dns_port: DEFAULT_DNS_PORT,
            sizes: MapSizes::default(),
            defence: Defence::DEFAULT,
            rrl_buckets: 1024,
        }
    }
}

/// What one generation of the maps holds, mirrored in userspace so a reload writes only
/// the differences and removes stale entries without walking the kernel maps.
#[derive(Default)]
struct Mirror {
    v4: StdHashMap<([u8; 4], u8), PrefixValue>,
    v6: StdHashMap<([u8; 16], u8), PrefixValue>,
    /// The answer tables as the kernel holds them, to change them in place.
    answers: Option<AnswerTable>,
}

/// Statistics of one [`KernelProgram::install`].
#[derive(Clone, Copy, Debug, Default)]
pub struct InstallStats {
    pub generation: u32,
    /// Prefix-trie entries written and removed (only the differences). The arrays
    /// (fast path, names, answers) are copied whole through memory mappings.
    pub written: usize,
    pub removed: usize,
    /// Time to compute the fast-path slots and copy them into the maps.
    pub fast_seconds: f64,
    /// Fast-path blocks in use per family, their words, and the blocks that did not fit
    /// (their slots ask the trie).
    pub fast_blocks_v4: usize,
    pub fast_blocks_v6: usize,
    pub fast_words: usize,
    pub fast_overflow: usize,
}

/// The loaded program and its maps.
pub struct KernelProgram {
    ebpf: Ebpf,
    /// Taken out of `ebpf` to fill it; held so the stages stay linked.
    _jump: ProgramArray<MapData>,
    state: RuntimeState,
    mirrors: [Mirror; 2],
    sizes: MapSizes,
    installed_once: bool,
    /// A shadow run's candidate is in the idle generation, with these aliases.
    shadow_aliases: Option<u32>,
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

impl KernelProgram {
    /// Loads the embedded object with the loader-set globals and map sizes, and loads
    /// (verifies) both programs. Nothing is attached yet.
    pub fn load(options: &LoadOptions) -> Result<Self, LoaderError> {
        Self::load_object(crate::XDP_OBJECT, options)
    }

    /// As [`KernelProgram::load`], from any object bytes (tests use it with broken objects).
    pub fn load_object(object: &[u8], options: &LoadOptions) -> Result<Self, LoaderError> {
        let sizes = options.sizes;
        let mut loader = EbpfLoader::new();
        loader.override_global("DNS_PORT", &options.dns_port, true);
        // Pairs of slots (see `RrlSlot`): at least one pair.
        let rrl_slots = options.rrl_buckets.clamp(2, 1 << 24).next_power_of_two();
        let mut defence = options.defence;
        defence.rrl_slot_mask = rrl_slots - 1;
        if defence.rrl_seed == 0 {
            defence.rrl_seed = std::hash::BuildHasher::hash_one(
                &std::hash::RandomState::new(),
                std::process::id(),
            ) | 1;
        }
        loader.override_global("DEFENCE", &defence, true);
        loader.map_max_entries("RRL", rrl_slots);
        let name_slots = table_slots(sizes.names);
        let answer_slots = table_slots(sizes.answers);
        let name_mask = name_slots - 1;
        let answer_mask = answer_slots - 1;
        loader.override_global("NAME_SLOT_MASK", &name_mask, true);
        loader.override_global("ANSWER_SLOT_MASK", &answer_mask, true);
        for generation in 0..2 {
            loader.map_max_entries(gen_name("PREFIX_V4", generation), sizes.prefixes_v4);
            loader.map_max_entries(gen_name("PREFIX_V6", generation), sizes.prefixes_v6);
            loader.map_max_entries(gen_name("NAMES", generation), name_slots);
            loader.map_max_entries(gen_name("ANSWERS", generation), answer_slots);
            loader.map_max_entries(
                gen_name("ANSWER_SETS", generation),
                sizes.answer_sets.max(1) + 1,
            );
            loader.map_max_entries(
                gen_name("FAST_BLOCKS", generation),
                sizes.fast_words.div_ceil(FAST_PAGE_WORDS).max(1),
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
            shadow_aliases: None,
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

    /// The handle of one of the object's XDP programs (`xdp_dns`, a stage), e.g. to attach it.
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

    /// Attaches one of the object's programs (normally `xdp_dns`) to an interface.
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

    /// The run-time flags in `STATE` now.
    #[must_use]
    pub fn flags(&self) -> u32 {
        self.state.flags
    }

    /// Sets run-time flags (`STATE_FLAG_*`) without touching the tables; the alias
    /// flags stay those of the installed table.
    pub fn set_flags(&mut self, flags: u32) -> Result<(), LoaderError> {
        let mut state = self.state;
        state.flags = flags & !STATE_FLAG_ALIASES | state.flags & STATE_FLAG_ALIASES;
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
        sum_counters(&array)
    }

    /// A reader of the counters with a map handle of its own, usable from any thread
    /// while this object is busy installing.
    pub fn counters_reader(&self) -> Result<Counters, LoaderError> {
        let map_err = |op, source| LoaderError::Map {
            map: "COUNTERS",
            op,
            source,
        };
        let data = map_data(self.map("COUNTERS")?).ok_or(LoaderError::Missing {
            kind: "map",
            name: "COUNTERS".to_owned(),
        })?;
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(|e| {
            map_err(
                "dup",
                aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "dup",
                    io_error: e,
                }),
            )
        })?;
        let data = MapData::from_fd(fd).map_err(|e| map_err("open", e))?;
        let array =
            PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(|e| map_err("open", e))?;
        Ok(Counters(array))
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

fn sum_counters<T: std::borrow::Borrow<MapData>>(
    array: &PerCpuArray<T, u64>,
) -> Result<[u64; counter::COUNT as usize], LoaderError> {
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

/// The XDP outcome counters through a map handle of their own.
pub struct Counters(PerCpuArray<MapData, u64>);

impl Counters {
    /// Counters summed over CPUs, indexed by `geodns_common::counter`.
    pub fn read(&self) -> Result<[u64; counter::COUNT as usize], LoaderError> {
        sum_counters(&self.0)
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
    for (index, name) in geodns_common::STAGES {
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

/// XDP attach mode from the CLI's `--xdp-mode`.
#[must_use]
pub fn xdp_mode(skb: bool) -> XdpMode {
    if skb {
        XdpMode::Skb
    } else {
        XdpMode::Driver
    }
}
