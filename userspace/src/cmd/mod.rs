//! One module per `geodns` subcommand; `main.rs` only dispatches.
pub mod compile;
pub mod diff;
pub mod fleet;
pub mod lookup;
pub mod node;
pub mod shadow;
pub mod stats;
