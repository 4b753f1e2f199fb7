//! Support for geodns integration tests: BPF test runs, frames, network namespaces.
pub mod bpf;
pub mod client;
pub mod daemon;
pub mod files;
pub mod fleet;
pub mod frame;
pub mod gun;
pub mod http;
pub mod knot;
pub mod netns;
pub mod probe;
pub mod rib;
pub mod stream;
pub mod synth;
pub mod table;

pub use bpf::{prog_test_run, require_bpf, TestRun};
pub use netns::{NetnsPair, Side};
