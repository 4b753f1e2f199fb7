//! Support for geodns integration tests: BPF test runs, frames, network namespaces.
pub mod bpf;
pub mod frame;

pub use bpf::{prog_test_run, require_bpf, TestRun};
