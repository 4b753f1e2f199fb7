//! Domain names: presentation <-> lowercase wire format, as the kernel keys them.
