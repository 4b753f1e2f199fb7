//! The kernel's defence settings for `geodns run`: `[rrl]` and `[guard]` of the config,
//! with the attached interface's addresses as the served list unless the config names
//! one.
use std::{ffi::CStr, io, net::IpAddr};

use geodns_maps::{defence::kernel_defence, Config};

use crate::loader::LoadOptions;

/// `options` with the defences of `config` for a program attached to `iface`.
pub fn load_options(
    mut options: LoadOptions,
    config: &Config,
    iface: &str,
) -> io::Result<LoadOptions> {
    let served = if config.guard.served_addresses.is_some() {
        None
    } else {
        Some(interface_addresses(iface)?)
    };
    let (defence, complete) = kernel_defence(&config.rrl, &config.guard, served.as_deref());
    if !complete {
        tracing::warn!(
            iface,
            max = geodns_common::MAX_SERVED,
            "more addresses than the kernel compares: every destination is answered; \
             set [guard] served_addresses"
        );
    }
    options.defence = defence;
    options.rrl_buckets = config.rrl.buckets;
    Ok(options)
}

/// The IPv4 and IPv6 addresses of interface `name` (`getifaddrs`).
pub fn interface_addresses(name: &str) -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is an element of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: a NUL-terminated interface name.
        if ifa.ifa_addr.is_null()
            || unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes() != name.as_bytes()
        {
            continue;
        }
        // SAFETY: `ifa_addr` is a sockaddr of the family it names.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: as above, a sockaddr_in.
                let sin = unsafe { ifa.ifa_addr.cast::<libc::sockaddr_in>().read_unaligned() };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            }
            libc::AF_INET6 => {
                // SAFETY: as above, a sockaddr_in6.
                let sin6 = unsafe { ifa.ifa_addr.cast::<libc::sockaddr_in6>().read_unaligned() };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
            _ => {}
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_127_0_0_1() {
        let addrs = super::interface_addresses("lo").expect("getifaddrs");
        assert!(
            addrs.contains(&"127.0.0.1".parse().expect("ip")),
            "{addrs:?}"
        );
        assert!(super::interface_addresses("no-such-if0")
            .expect("getifaddrs")
            .is_empty());
    }
}
