//! Empty library target: it lets `userspace/build.rs` take a build-dependency on this
//! crate, so cargo rebuilds the `geodns` binary when the program's sources change.
#![no_std]
