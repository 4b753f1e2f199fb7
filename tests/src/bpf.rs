//! `BPF_PROG_TEST_RUN` and the "do we have BPF here" check.
use std::{
    io::{self, Write as _},
    sync::OnceLock,
};

/// `bpf(2)` command number of `BPF_PROG_TEST_RUN`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one `BPF_PROG_TEST_RUN` gave back.
#[derive(Clone, Debug)]
pub struct TestRun {
    /// The XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, ...).
    pub action: u32,
    /// The frame as the program left it.
    pub output: Vec<u8>,
    /// Average run time in ns over `repeat` runs, as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs the program `prog_fd` on `frame` `repeat` times (at least once) in the kernel.
pub fn prog_test_run(prog_fd: i32, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    // Room for the reply to grow: XDP test runs allow growing into the tailroom.
    let mut out = vec![0u8; 4096];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog_fd).map_err(|_| io::Error::other("negative fd"))?,
        data_size_in: u32::try_from(frame.len()).map_err(io::Error::other)?,
        data_size_out: u32::try_from(out.len()).map_err(io::Error::other)?,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..TestRunAttr::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix for this command; the buffers outlive the
    // call and their sizes are stated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun {
        action: attr.retval,
        output: out,
        duration_ns: attr.duration,
    })
}

/// `bpf(2)` command number of `BPF_MAP_CREATE`.
pub(crate) const BPF_MAP_CREATE: libc::c_long = 0;
/// `BPF_MAP_TYPE_ARRAY`.
pub(crate) const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// The first members of `union bpf_attr` for `BPF_MAP_CREATE`; the kernel reads the rest
/// as zero.
#[repr(C)]
pub(crate) struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
}

/// Why BPF cannot be used here, or `None` when it can: root, and a `bpf(2)` that
/// creates a map (seccomp or a locked-down kernel refuse even root).
fn bpf_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (BPF and network namespaces need it)".into());
    }
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for this command, its size is stated.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MapCreateAttr>(),
        )
    };
    if fd < 0 {
        return Some(format!(
            "bpf(BPF_MAP_CREATE) fails: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is the map the call above created and nothing else holds it.
    unsafe { libc::close(i32::try_from(fd).unwrap_or(-1)) };
    None
}

/// Whether tests that need root and BPF can run. Without them: skip with a printed
/// reason, unless `GEODNS_REQUIRE_BPF=1`, where a skip would hide a broken CI: panic.
///
/// When `GEODNS_PRIVILEGED_LOG` names a file (`cargo xtask test` sets it), one line per
/// call is appended to it, `ran <test>` or `skipped <test>: <reason>`, so the runner
/// can say how many privileged tests really ran: cargo counts a skip as a pass.
#[must_use]
pub fn require_bpf() -> bool {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    let required = std::env::var("GEODNS_REQUIRE_BPF").is_ok_and(|v| v == "1");
    let reason = REASON.get_or_init(bpf_unavailable);
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed)")
        .to_owned();
    match reason {
        None => record(&format!("ran {test}")),
        Some(r) => record(&format!("skipped {test}: {r}")),
    }
    match (reason, required) {
        (None, _) => true,
        (Some(r), true) => panic!("GEODNS_REQUIRE_BPF=1 but {r}"),
        (Some(r), false) => {
            eprintln!("skipping: {r}; set GEODNS_REQUIRE_BPF=1 to make this a failure");
            false
        }
    }
}

/// Appends `line` to the file `GEODNS_PRIVILEGED_LOG` names, if any. One `write` of a
/// short line to a file opened for appending: lines from parallel tests do not mix.
fn record(line: &str) {
    let Some(path) = std::env::var_os("GEODNS_PRIVILEGED_LOG") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot record to {}: {e}", path.to_string_lossy());
    }
}
