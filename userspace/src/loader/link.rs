//! The attachment that outlives the process: `xdp_dns` is attached through a
//! `bpf_link` pinned at `<pin dir>/link`, so the program keeps answering from its maps
//! when the daemon exits or dies. A later daemon does not detach it: it replaces the
//! program behind the link with its own in one `bpf_link_update` (every packet runs the
//! old program with the old maps or the new one with the new maps), unless the pinned
//! program was built against another contract layout (`CONTRACT_STAMP` in its `DAEMON`
//! map), which is detached and attached anew, with a log line saying why.
//!
//! The heartbeat: the daemon writes `CLOCK_MONOTONIC` into `DAEMON` every second; the
//! kernel counts the queries it passes while the beat is stale (`pass_no_daemon`).
use std::{
    ffi::CString,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        XdpMode,
    },
};
use geodns_common::{counter, DaemonState, CONTRACT_STAMP};

use super::{xdp_program, KernelProgram, LoaderError};

/// The pin of the link under the pin directory.
pub const LINK_PIN: &str = "link";

/// How the program came to be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachHow {
    /// Nothing was attached through the pin directory: a new link.
    Attached,
    /// A pinned link of the same layout: its program replaced in place (`bpf_link_update`).
    Updated,
    /// A pinned link of another layout (or unreadable): detached, then a new link.
    Reattached,
}

impl AttachHow {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attached => "attached",
            Self::Updated => "updated",
            Self::Reattached => "reattached",
        }
    }
}

/// What the daemon before this one left in the pin directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct Previous {
    /// Its process id and the age of its last heartbeat.
    pub pid: u32,
    pub beat_age: Duration,
    /// Queries its program passed while no daemon was alive.
    pub passed_no_daemon: u64,
}

/// The outcome of [`KernelProgram::attach_pinned`].
#[derive(Clone, Copy, Debug)]
pub struct Attachment {
    pub how: AttachHow,
    pub previous: Option<Previous>,
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the kernel's `bpf_ktime_get_coarse_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn map_err(map: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map { map, op, source }
}

fn program_err(op: &'static str) -> impl Fn(aya::programs::ProgramError) -> LoaderError {
    move |e| LoaderError::Program {
        program: "xdp_dns",
        op,
        source: Box::new(e),
    }
}

fn link_err(op: &'static str) -> impl Fn(aya::programs::links::LinkError) -> LoaderError {
    move |source| LoaderError::Link { op, source }
}

/// Writes the daemon's beat into a `DAEMON` map, through a handle of its own (usable from
/// any thread while the control thread installs).
pub struct Heartbeat(Array<MapData, DaemonState>);

impl Heartbeat {
    /// Writes "alive now".
    pub fn beat(&mut self) -> Result<(), LoaderError> {
        let state = DaemonState {
            stamp: CONTRACT_STAMP,
            beat_ns: monotonic_ns(),
            pid: std::process::id(),
            _pad: 0,
        };
        self.0.set(0, state, 0).map_err(map_err("DAEMON", "set"))
    }
}

/// The daemon state a pinned `DAEMON` map holds; `Err` says why it is not ours to read.
pub fn read_pinned_daemon(dir: &Path) -> Result<DaemonState, String> {
    let path = dir.join("DAEMON");
    let data =
        MapData::from_pin(&path).map_err(|e| format!("no readable {}: {e}", path.display()))?;
    let array: Array<MapData, DaemonState> = Array::try_from(Map::Array(data))
        .map_err(|e| format!("{} has another layout: {e}", path.display()))?;
    let state = array
        .get(&0, 0)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if state.stamp != CONTRACT_STAMP {
        return Err(format!(
            "its contract stamp is {:#x}, this build's {CONTRACT_STAMP:#x}",
            state.stamp
        ));
    }
    Ok(state)
}

/// The `pass_no_daemon` counter of a pinned `COUNTERS` map (of our layout), summed.
#[must_use]
pub fn read_pinned_no_daemon(dir: &Path) -> Option<u64> {
    let data = MapData::from_pin(dir.join("COUNTERS")).ok()?;
    let array: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(data)).ok()?;
    let values = array.get(&counter::PASS_NO_DAEMON, 0).ok()?;
    Some(values.iter().sum())
}

/// The interface a pinned XDP link is attached to (0: its device is gone).
fn pinned_link_ifindex(path: &Path) -> std::io::Result<u32> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // BPF_OBJ_GET: { pathname: u64, bpf_fd: u32, file_flags: u32 }.
    let mut get = [0u64; 2];
    get[0] = name.as_ptr() as u64;
    // SAFETY: the attribute buffer is valid for the call and sized as passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            7, // BPF_OBJ_GET
            get.as_mut_ptr(),
            std::mem::size_of_val(&get),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel gave us.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).map_err(std::io::Error::other)?) };
    // struct bpf_link_info: type, id, prog_id, then the union (8-aligned) whose xdp
    // member starts with the ifindex.
    let mut info = [0u32; 32];
    // BPF_OBJ_GET_INFO_BY_FD: { bpf_fd: u32, info_len: u32, info: u64 }.
    let mut attr = [0u64; 2];
    attr[0] = u64::from(u32::try_from(fd.as_raw_fd()).unwrap_or(0))
        | (u64::try_from(std::mem::size_of_val(&info)).unwrap_or(0) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: both buffers are valid for the call and sized as passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            15, // BPF_OBJ_GET_INFO_BY_FD
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info[4])
}

impl KernelProgram {
    /// A writer of this program's heartbeat with a map handle of its own.
    pub fn heartbeat(&self) -> Result<Heartbeat, LoaderError> {
        let data = super::map_data(self.map("DAEMON")?).ok_or(LoaderError::Missing {
            kind: "map",
            name: "DAEMON".to_owned(),
        })?;
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| LoaderError::Pin {
                path: PathBuf::from("DAEMON"),
                source: e,
            })?;
        let data = MapData::from_fd(fd).map_err(map_err("DAEMON", "open"))?;
        let array = Array::try_from(Map::Array(data)).map_err(map_err("DAEMON", "open"))?;
        let mut beat = Heartbeat(array);
        beat.beat()?;
        Ok(beat)
    }

    /// Attaches `xdp_dns` to `if_index` through the link pinned at `<dir>/link`: a
    /// link of our layout left by an earlier daemon (alive and handing over, or dead)
    /// gets this program in one atomic update; a link of another layout is detached
    /// and attached anew; without one, a new link is made and pinned. `dir` must exist
    /// on a BPF filesystem.
    pub fn attach_pinned(
        &mut self,
        if_index: u32,
        mode: XdpMode,
        dir: &Path,
    ) -> Result<Attachment, LoaderError> {
        let path = dir.join(LINK_PIN);
        let pin_err = |source: std::io::Error| LoaderError::Pin {
            path: path.clone(),
            source,
        };
        let mut how = AttachHow::Attached;
        let mut previous = None;
        if path.exists() {
            let pinned = PinnedLink::from_pin(&path).map_err(link_err("open the pinned link"))?;
            let pinned_if = pinned_link_ifindex(&path).map_err(pin_err)?;
            let state = if pinned_if != 0 && pinned_if != if_index {
                return Err(pin_err(std::io::Error::other(format!(
                    "the pinned link is attached to interface index {pinned_if}, not {if_index}: \
                     one --pin-dir per interface"
                ))));
            } else if pinned_if == 0 {
                Err("its interface is gone".to_owned())
            } else {
                read_pinned_daemon(dir)
            };
            match state {
                Ok(state) => {
                    previous = Some(Previous {
                        pid: state.pid,
                        beat_age: Duration::from_nanos(
                            monotonic_ns().saturating_sub(state.beat_ns),
                        ),
                        passed_no_daemon: read_pinned_no_daemon(dir).unwrap_or(0),
                    });
                    let link = XdpLink::try_from(FdLink::from(pinned))
                        .map_err(link_err("open the pinned link"))?;
                    let program = xdp_program(&mut self.ebpf, "xdp_dns")?;
                    let id = program
                        .attach_to_link(link)
                        .map_err(program_err("bpf_link_update"))?;
                    let link = program.take_link(id).map_err(program_err("take link"))?;
                    self.link = Some(FdLink::try_from(link).map_err(link_err("fd link"))?);
                    return Ok(Attachment {
                        how: AttachHow::Updated,
                        previous,
                    });
                }
                Err(why) => {
                    tracing::warn!(
                        pin = %path.display(),
                        reason = %why,
                        "the pinned XDP link is from another build or layout: detaching it and attaching anew"
                    );
                    drop(pinned.unpin().map_err(pin_err)?);
                    how = AttachHow::Reattached;
                }
            }
        }
        let program = xdp_program(&mut self.ebpf, "xdp_dns")?;
        let id = program
            .attach_to_if_index(if_index, mode)
            .map_err(program_err("attach"))?;
        let link = program.take_link(id).map_err(program_err("take link"))?;
        let link = FdLink::try_from(link).map_err(link_err("fd link (bpf_link)"))?;
        let pinned = link
            .pin(&path)
            .map_err(|e| pin_err(std::io::Error::other(e)))?;
        self.link = Some(FdLink::from(pinned));
        Ok(Attachment { how, previous })
    }

    /// Removes every entry of the prefix tries, one delete at a time: for a program no
    /// longer attached (handed over), before its maps are freed. The kernel frees a
    /// trie in one loop without a reschedule point, which on a 500k-prefix table holds
    /// a CPU for tens of milliseconds, and the queries that CPU should have carried then
    /// are lost; deleting entry by entry costs about a second and stalls nothing.
    /// Returns the entries removed.
    pub fn empty_tries(&mut self) -> Result<usize, LoaderError> {
        let mut stats = super::InstallStats::default();
        for generation in 0..2u32 {
            let mut mirror = std::mem::take(&mut self.mirrors[generation as usize]);
            let v4 = super::gen_name("PREFIX_V4", generation);
            let done = super::install::sync_lpm(
                self.map_mut(v4)?,
                v4,
                &mut mirror.v4,
                std::iter::empty(),
                &mut stats,
            );
            let v6 = super::gen_name("PREFIX_V6", generation);
            let done = done.and_then(|()| {
                super::install::sync_lpm(
                    self.map_mut(v6)?,
                    v6,
                    &mut mirror.v6,
                    std::iter::empty(),
                    &mut stats,
                )
            });
            self.mirrors[generation as usize] = mirror;
            done?;
        }
        Ok(stats.removed)
    }

    /// A clean stop: removes the link's pin and closes it, which detaches the program.
    /// Only the link this program holds: after a handover the pin is the next daemon's.
    pub fn detach_pinned(&mut self, dir: &Path) {
        if self.link.take().is_some() {
            let path = dir.join(LINK_PIN);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(pin = %path.display(), error = %e, "link pin not removed");
                }
            }
        }
    }
}
