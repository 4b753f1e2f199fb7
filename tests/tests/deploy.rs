//! `cargo xtask deploy` (its own code, included) against a real box: Debian's sshd in a
//! test namespace at a 198.18.0.0/15 address, with keys made here. A first deploy
//! starts `geodns run` there; a second, with a new table, replaces it through the
//! handover while a paced stream loses nothing; a third, with a broken config, fails
//! the check on the box and changes nothing.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use geodns_tests::{
    client::answer_in,
    daemon::geodns_bin,
    files::{demo_without_checks, examples, TempDir},
    frame::Query,
    require_bpf,
    stream::{self, Pace},
    NetnsPair, Side,
};

#[path = "../../xtask/src/install.rs"]
#[allow(dead_code, reason = "the xtask's module; this test uses part of it")]
mod install;

#[path = "../../xtask/src/deploy.rs"]
mod deploy;

/// sshd in the box's namespace; killed on drop.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon deploy started on the box (not our child): SIGTERM and wait, so it
/// detaches and unpins; then what a failure may leave.
struct BoxDaemon {
    pid: Option<u32>,
    pin: PathBuf,
}

impl Drop for BoxDaemon {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: a signal to a process this test started (through sshd).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.pin) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.pin);
        let _ = std::fs::remove_file(geodns::daemon::handover::socket_path(&self.pin));
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (Debian's openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

fn us_database(dir: &Path) {
    use geodns_maps::mmdb::{demo, Value};
    let mut w = demo::country().expect("the demo country database");
    let us = Value::map([
        ("continent", Value::map([("code", Value::str("NA"))])),
        ("country", Value::map([("iso_code", Value::str("US"))])),
    ]);
    for half in ["192.0.2.0", "192.0.2.128"] {
        w.insert(half.parse().expect("ip"), 25, &us)
            .expect("insert");
    }
    std::fs::write(dir.join("us-country.mmdb"), w.to_bytes().expect("encode"))
        .expect("write the database");
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, in order")]
fn deploy_over_ssh_replaces_the_daemon_without_a_lost_query() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("deploy");
    let d = dir.path();
    // The box: installed as `cargo xtask install` does, its own paths under `d`.
    let layout = install::Layout {
        root: PathBuf::from("/"),
        prefix: d.join("box/usr"),
        config_dir: d.join("box/etc/geodns"),
        unit_dir: d.join("box/etc/systemd/system"),
    };
    install::install_files(&layout, &geodns_bin(), &examples(), &pair.server_if)
        .expect("install on the box");
    // The operator's config (no health checks: their targets are not here) and tables.
    let operator = d.join("operator");
    std::fs::create_dir_all(&operator).expect("operator dir");
    let germany = demo_without_checks(&operator);
    std::fs::copy(&germany, layout.config()).expect("the box's config");
    us_database(&layout.config_dir);
    let us = operator.join("us.toml");
    let text = std::fs::read_to_string(&germany).expect("config");
    std::fs::write(&us, text.replace("demo-country.mmdb", "us-country.mmdb")).expect("us.toml");
    let broken = operator.join("broken.toml");
    std::fs::write(
        &broken,
        "[zone]\norigin = \"cdn.example.net.\"\nbogus = 1\n",
    )
    .expect("broken");
    let pin = PathBuf::from(format!("/sys/fs/bpf/geodns-deploy-{}", std::process::id()));
    std::fs::write(
        layout.env_file(),
        format!(
            "GEODNS_CONFIG={}\nGEODNS_IFACE={}\nGEODNS_ARGS=--pin-dir {} --metrics 127.0.0.1:19193 --admin-token {}\nGEODNS_LOG_DIR={}\n",
            layout.config().display(),
            pair.server_if,
            pin.display(),
            d.join("box/token").display(),
            d.join("box/log").display(),
        ),
    )
    .expect("the box's environment file");
    let mut daemon = BoxDaemon { pid: None, pin };

    // sshd on the box, keys made here.
    let (host_key, key) = (d.join("host_key"), d.join("id"));
    keygen(&host_key);
    keygen(&key);
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).expect("authorized_keys");
    // sshd's privilege separation directory (Debian's package creates it at boot).
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let listen = format!("ListenAddress={}:22", pair.server_v4);
    let host_key_opt = format!("HostKey={}", host_key.display());
    let keys_opt = format!("AuthorizedKeysFile={}", d.join("authorized_keys").display());
    let sshd = Command::new("ip")
        .args(["netns", "exec", &pair.server_ns, "/usr/sbin/sshd", "-D"])
        .args(["-f", "/dev/null"])
        .args(["-o", &listen, "-o", &host_key_opt, "-o", &keys_opt])
        .args([
            "-o",
            "PermitRootLogin=prohibit-password",
            "-o",
            "StrictModes=no",
        ])
        .args([
            "-o",
            "UsePAM=no",
            "-o",
            "PidFile=none",
            "-o",
            "PasswordAuthentication=no",
        ])
        // scp speaks SFTP (Debian's sshd_config has this line).
        .args(["-o", "Subsystem=sftp /usr/lib/openssh/sftp-server"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sshd (Debian's openssh-server; `cargo xtask test` installs it)");
    let _sshd = Sshd(sshd);
    let opts: Vec<String> = [
        "-i",
        &key.to_string_lossy(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let in_client = |tool: &str| -> Vec<std::ffi::OsString> {
        ["ip", "netns", "exec", &pair.client_ns, tool]
            .iter()
            .map(Into::into)
            .chain(opts.iter().map(Into::into))
            .collect()
    };
    let remote = deploy::Remote {
        target: format!("root@{}", pair.server_v4),
        ssh: in_client("ssh"),
        scp: in_client("scp"),
    };
    // sshd takes a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("ip")
        .args(["netns", "exec", &pair.client_ns, "ssh"])
        .args(&opts)
        .arg(&remote.target)
        .arg("true")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        assert!(Instant::now() < deadline, "sshd on the box does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("xdp_pass on the client");
    let geo = Query::new("www.cdn.example.net.", 1).ecs("192.0.2.0", 24);
    let germany_answer: Vec<IpAddr> = vec!["198.18.1.10".parse().expect("ip")];
    let us_answer: Vec<IpAddr> = vec![
        "198.18.3.10".parse().expect("ip"),
        "198.18.3.11".parse().expect("ip"),
    ];

    // 1. The first deploy starts the daemon.
    let first =
        deploy::deploy(&remote, &layout, &geodns_bin(), None, None).expect("the first deploy");
    daemon.pid = Some(first.pid);
    eprintln!("first deploy: {first:?}");
    assert!(first.version.contains("commit"), "{first:?}");
    assert_eq!(answer_in(&pair, &geo), germany_answer);

    // 2. A new table, deployed under a stream: a handover, nothing lost.
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    let stop = AtomicBool::new(false);
    let templates = vec![geo.build(), Query::new("cdn.example.net.", 6).build()];
    let pace = Pace {
        rate: 2_000,
        timeout: Duration::from_secs(2),
        max_time: Duration::from_mins(2),
    };
    let (second, samples) = std::thread::scope(|s| {
        let samples = s.spawn(|| {
            pair.in_ns(Side::Client, || {
                stream::udp(server, &templates, |i| usize::from(i % 4 == 3), pace, &stop)
            })
            .expect("client namespace")
        });
        std::thread::sleep(Duration::from_millis(500));
        let second = deploy::deploy(&remote, &layout, &geodns_bin(), Some(&us), None);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        (second, samples.join().expect("stream"))
    });
    let second = second.expect("the second deploy");
    daemon.pid = Some(second.pid);
    eprintln!("second deploy: {second:?}; {} queries", samples.len());
    assert_ne!(second.pid, first.pid);
    assert!(
        !Path::new(&format!("/proc/{}", first.pid)).exists(),
        "the first daemon exited after the handover"
    );
    let lost = samples.iter().filter(|s| s.reply.is_none()).count();
    assert_eq!(lost, 0, "queries lost during the deploy");
    assert!(samples.len() > 1_000, "a stream: {}", samples.len());
    assert_eq!(answer_in(&pair, &geo), us_answer, "the new table serves");
    assert_eq!(
        std::fs::read_to_string(layout.config()).expect("config"),
        std::fs::read_to_string(&us).expect("us.toml"),
        "the new config is in place"
    );

    // 3. A broken config: refused on the box, nothing changed.
    let err = deploy::deploy(&remote, &layout, &geodns_bin(), Some(&broken), None)
        .expect_err("a broken config must not deploy");
    eprintln!("third deploy: {err:#}");
    assert!(
        format!("{err:#}").contains("config check failed"),
        "{err:#}"
    );
    assert!(
        Path::new(&format!("/proc/{}", second.pid)).exists(),
        "the running daemon serves on"
    );
    assert_eq!(answer_in(&pair, &geo), us_answer);
    assert_eq!(
        std::fs::read_to_string(layout.config()).expect("config"),
        std::fs::read_to_string(&us).expect("us.toml"),
        "the config on the box is unchanged"
    );

    // 4. A start that fails (no such interface on the box): the old files come back and
    // the running daemon serves on.
    let err = deploy::deploy(&remote, &layout, &geodns_bin(), None, Some("nosuchif0"))
        .expect_err("a daemon that cannot start must not replace the running one");
    eprintln!("fourth deploy: {err:#}");
    assert!(format!("{err:#}").contains("did not start"), "{err:#}");
    assert!(
        Path::new(&format!("/proc/{}", second.pid)).exists(),
        "the running daemon serves on"
    );
    assert_eq!(answer_in(&pair, &geo), us_answer);
    assert!(
        layout.binary().exists() && !layout.binary().with_extension("prev").exists(),
        "the previous binary is back in place"
    );
    drop(daemon);
}
