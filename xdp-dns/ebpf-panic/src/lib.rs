//! The eBPF program's panic handler. The verifier rejects any reachable panic path, so
//! this never runs; it exists because `no_std` binaries need one.
#![no_std]

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
