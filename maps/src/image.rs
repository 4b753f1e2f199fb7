//! The whole kernel image of one generation, computed here so the loader only copies
//! bytes: the prefix lists (for the LPM tries), the `NAMES` slot array, the answer
//! table (keys and sets), and the fast path's top and pages.
use geodns_common::{NameEntry, FAST_PAGE_WORDS};

use crate::{
    engine::KernelMaps,
    fastpath::FastTable,
    slots::{self, AnswerTable, SlotsError},
};

/// How big the kernel's arrays are (set at load time).
#[derive(Clone, Copy, Debug)]
pub struct ImageSizes {
    /// Slots of the `NAMES` array (a power of two).
    pub name_slots: usize,
    /// Slots of the `ANSWERS` array (a power of two) and of `ANSWER_SETS`.
    pub answer_slots: usize,
    pub set_slots: usize,
    /// Words the fast path's blocks may take, both families.
    pub fast_words: usize,
}

/// One `FAST_BLOCKS` element: a 4 KiB page of block words.
pub type Page = [u64; FAST_PAGE_WORDS as usize];

/// Everything one generation of the kernel maps holds, ready to copy.
pub struct KernelImage<'a> {
    pub maps: &'a KernelMaps,
    pub names: Vec<NameEntry>,
    pub answers: AnswerTable,
    pub fast_top: Vec<u64>,
    pub fast_pages: Vec<Page>,
    pub fast: FastStats,
}

/// What the fast path took.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastStats {
    pub blocks_v4: usize,
    pub blocks_v6: usize,
    pub words: usize,
    /// Blocks that did not fit (their slots ask the trie).
    pub overflow: usize,
    /// Time to compute the fast path.
    pub seconds: f64,
}

impl<'a> KernelImage<'a> {
    /// The image of `maps` in arrays of `sizes`.
    pub fn build(maps: &'a KernelMaps, sizes: ImageSizes) -> Result<Self, SlotsError> {
        let names = slots::build_names(&maps.names, sizes.name_slots)?;
        let answers = AnswerTable::build(&maps.answers, sizes.answer_slots, sizes.set_slots)?;
        let started = std::time::Instant::now();
        let table = FastTable::build(&maps.prefixes_v4, &maps.prefixes_v6, sizes.fast_words);
        let fast_pages = table
            .pages()
            .map(|p| p.try_into().unwrap_or([0; FAST_PAGE_WORDS as usize]))
            .collect();
        let fast = FastStats {
            blocks_v4: table.v4.blocks,
            blocks_v6: table.v6.blocks,
            words: table.blocks.len(),
            overflow: table.v4.overflow + table.v6.overflow,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok(Self {
            maps,
            names,
            answers,
            fast_top: table.top_words(),
            fast_pages,
            fast,
        })
    }
}
