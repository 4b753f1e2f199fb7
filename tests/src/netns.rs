//! Test hosts: two network namespaces joined by a veth pair, deleted on drop (also when
//! a test panics). Addresses come only from 198.18.0.0/15 and `2001:2::/48`.
use std::{
    collections::hash_map::RandomState,
    fs::File,
    hash::{BuildHasher as _, Hasher as _},
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    programs::{Xdp, XdpMode},
    Ebpf,
};
use geodns::loader::KernelProgram;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Which end of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// Two namespaces and a veth pair between them, with IPv4 and IPv6 addresses, up.
pub struct NetnsPair {
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
    pub server_v4: Ipv4Addr,
    pub client_v4: Ipv4Addr,
    pub server_v6: Ipv6Addr,
    pub client_v6: Ipv6Addr,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetnsPair {
    /// Creates the pair. Namespace names hold the pid, a per-process counter and a
    /// random suffix, so parallel tests and processes never collide, nor do they with
    /// what a crashed run left under a reused pid. Each pair gets its own /30 and /64.
    pub fn new() -> io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let random = RandomState::new().build_hasher().finish() & 0xffff;
        let tag = format!("{pid}-{n}-{random:04x}");
        // Interface names live inside their own namespace (15 bytes at most), so the
        // pid and the counter are enough to tell them apart in `ip` output.
        let if_tag = format!("{}-{n}", pid % 100_000);
        // Pair index within 198.19.0.0/16 (the upper half of 198.18.0.0/15).
        let k = (pid.wrapping_mul(31).wrapping_add(n)) % 16_384;
        let (hi, lo) = (
            u8::try_from(k / 64).unwrap_or(0),
            u8::try_from((k % 64) * 4).unwrap_or(0),
        );
        let k16 = u16::try_from(k).unwrap_or(0);
        let pair = Self {
            server_ns: format!("gdns-{tag}-s"),
            client_ns: format!("gdns-{tag}-c"),
            server_if: format!("gd{if_tag}s"),
            client_if: format!("gd{if_tag}c"),
            server_v4: Ipv4Addr::new(198, 19, hi, lo + 1),
            client_v4: Ipv4Addr::new(198, 19, hi, lo + 2),
            server_v6: Ipv6Addr::new(0x2001, 2, 0, k16, 0, 0, 0, 1),
            client_v6: Ipv6Addr::new(0x2001, 2, 0, k16, 0, 0, 0, 2),
        };
        // From here on, Drop cleans up whatever was created.
        ip(&["netns", "add", &pair.server_ns])?;
        ip(&["netns", "add", &pair.client_ns])?;
        ip(&[
            "link",
            "add",
            &pair.server_if,
            "netns",
            &pair.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &pair.client_if,
            "netns",
            &pair.client_ns,
        ])?;
        for (ns, ifname, v4, v6) in [
            (
                &pair.server_ns,
                &pair.server_if,
                pair.server_v4,
                pair.server_v6,
            ),
            (
                &pair.client_ns,
                &pair.client_if,
                pair.client_v4,
                pair.client_v6,
            ),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{v4}/30"), "dev", ifname])?;
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        Ok(pair)
    }

    #[must_use]
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Server => &self.server_ns,
            Side::Client => &self.client_ns,
        }
    }

    #[must_use]
    pub fn ifname(&self, side: Side) -> &str {
        match side {
            Side::Server => &self.server_if,
            Side::Client => &self.client_if,
        }
    }

    /// Runs `f` on a thread that has entered the namespace of `side` (sockets it opens
    /// and interfaces it looks up are that namespace's).
    pub fn in_ns<T: Send>(&self, side: Side, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = format!("/var/run/netns/{}", self.ns(side));
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path)?;
                // SAFETY: setns on this thread only; the fd is valid for the call.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread in namespace panicked"))?
        })
    }

    /// The interface index of `side`'s veth, as seen in its namespace.
    pub fn ifindex(&self, side: Side) -> io::Result<u32> {
        let name = std::ffi::CString::new(self.ifname(side)).map_err(io::Error::other)?;
        let idx = self.in_ns(side, || {
            // SAFETY: a valid C string.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        })?;
        if idx == 0 {
            return Err(io::Error::other(format!(
                "no interface {}",
                self.ifname(side)
            )));
        }
        Ok(idx)
    }

    /// Attaches `program` of a loaded object to `side`'s veth. The ifindex is looked up
    /// and the netlink request sent from inside that namespace (both are per namespace).
    pub fn attach(
        &self,
        side: Side,
        xdp: &mut KernelProgram,
        program: &'static str,
        mode: XdpMode,
    ) -> io::Result<()> {
        let idx = self.ifindex(side)?;
        self.in_ns(side, || xdp.attach_program(program, idx, mode))?
            .map_err(|e| io::Error::other(format!("{program} on {}: {e}", self.ifname(side))))
    }

    /// Attaches `xdp_pass` natively on `side`'s veth: veth delivers an `XDP_TX` reply
    /// only to a peer that has an XDP program, so the client side of a test that
    /// expects replies from the kernel needs this. The program stays attached until the
    /// returned object is dropped.
    #[must_use = "the program is detached when the returned object is dropped"]
    pub fn attach_pass(&self, side: Side) -> io::Result<Ebpf> {
        self.attach_baseline(side, "xdp_pass")
    }

    /// Attaches one program of the baseline object (`xdp_echo`, `xdp_pass`; see
    /// [`load_baseline`]) natively on `side`'s veth, until the returned object is dropped.
    #[must_use = "the program is detached when the returned object is dropped"]
    pub fn attach_baseline(&self, side: Side, program: &'static str) -> io::Result<Ebpf> {
        let mut ebpf = load_baseline(program)?;
        let xdp: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or_else(|| io::Error::other(format!("the baseline object has no {program}")))?
            .try_into()
            .map_err(io::Error::other)?;
        let idx = self.ifindex(side)?;
        self.in_ns(side, || xdp.attach_to_if_index(idx, XdpMode::Driver))?
            .map_err(|e| io::Error::other(format!("{program} on {}: {e}", self.ifname(side))))?;
        Ok(ebpf)
    }

    /// Gives `side`'s veth a receive thread of its own (threaded NAPI) on the last CPU,
    /// as a NIC's receive queue has its interrupt on a core of its own on a DNS box.
    /// By default veth does its receive work in the sender's softirq, on the sender's
    /// CPU, so a load generator and the server's XDP program share one CPU while the
    /// other idles; unpinned, the thread lands on either CPU from run to run (measured
    /// 0.85M or 1.4M replies/s). veth has a NAPI instance only with an XDP program
    /// attached or GRO on, so GRO is switched on first (it does not change the XDP
    /// path). Needs `ethtool`.
    pub fn receive_thread(&self, side: Side) -> io::Result<()> {
        let dev = self.ifname(side);
        let script = format!(
            "ethtool -K {dev} gro on >/dev/null && echo 1 > /sys/class/net/{dev}/threaded \
             && cat /sys/class/net/{dev}/threaded"
        );
        let out = self.exec(side, &["sh", "-c", &script])?;
        if !out.status.success() || String::from_utf8_lossy(&out.stdout).trim() != "1" {
            return Err(io::Error::other(format!(
                "threaded NAPI on {dev}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        // The kernel thread is named "napi/<dev>-<id>" (the name cut at 15 bytes).
        let name: String = format!("napi/{dev}-").chars().take(15).collect();
        let cpu = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) - 1;
        let mut pinned = 0;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(&name) {
                continue;
            }
            pin_task(pid, cpu)?;
            pinned += 1;
        }
        if pinned == 0 {
            return Err(io::Error::other(format!("no receive thread {name}* found")));
        }
        Ok(())
    }

    /// Runs a command inside `side`'s namespace.
    pub fn exec(&self, side: Side, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", self.ns(side)])
            .args(args)
            .output()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth, and with it the peer.
        for ns in [&self.server_ns, &self.client_ns] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Pins the task `tid` (a thread or process id; 0: the calling thread) to `cpu`.
///
/// # Errors
/// The affinity call failed (the task is gone, or the CPU does not exist).
pub fn pin_task(tid: i32, cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t with one CPU set, passed by pointer with its size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Loads `program` of the baseline object (`geodns::XDP_BENCH_OBJECT`: `xdp_echo`, the
/// end-to-end ceiling, and `xdp_pass`), with the DNS port at its default. Nothing of
/// the responder is loaded or verified.
pub fn load_baseline(program: &'static str) -> io::Result<Ebpf> {
    let mut ebpf = aya::EbpfLoader::new()
        .load(geodns::XDP_BENCH_OBJECT)
        .map_err(io::Error::other)?;
    let xdp: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or_else(|| io::Error::other(format!("the baseline object has no {program}")))?
        .try_into()
        .map_err(io::Error::other)?;
    xdp.load().map_err(io::Error::other)?;
    Ok(ebpf)
}
