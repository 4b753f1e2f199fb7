//! Knot DNS (Debian's `knotd`, which `cargo xtask bench` installs) as a peer for the
//! benchmarks: the demo zone as plain static records, in a pair's server namespace.
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use crate::{daemon::stop_child, frame::Query, NetnsPair, Side};

/// The demo zone's SOA, NS and their addresses, the geo name as one static `A` (Knot
/// without its geoip module: a peer doing less per query than geodns, which picks
/// `www`'s node per client), and the name with only an `A` (`AAAA` NODATA).
pub const ZONE: &str = "$ORIGIN cdn.example.net.
$TTL 30
@     SOA  ns1 hostmaster.example.net. 2025010101 7200 3600 1209600 60
@     NS   ns1
@     NS   ns2.example.org.
ns1   A    198.18.0.53
ns1   AAAA 2001:2::53
www   A    198.18.1.10
mail  A    198.18.7.25
";

/// A running `knotd`, stopped on drop.
pub struct Knot {
    child: Child,
}

impl Knot {
    /// Starts `knotd` serving [`ZONE`] on `listen` (UDP and TCP) in `pair`'s server
    /// namespace, its files under `dir`, and waits until it answers the SOA. `None`
    /// (with the reason printed) when there is no `knotd`.
    ///
    /// # Panics
    /// When `knotd` does not answer within 10 s.
    #[must_use]
    pub fn start(pair: &NetnsPair, dir: &Path, listen: SocketAddr) -> Option<Self> {
        if Command::new("knotd").arg("--version").output().is_err() {
            eprintln!("no knotd (cargo xtask bench installs Debian's knot): no peer figure");
            return None;
        }
        let dir = dir.join("knot");
        std::fs::create_dir_all(dir.join("db")).expect("knot dir");
        std::fs::write(dir.join("cdn.example.net.zone"), ZONE).expect("knot zone");
        let d = dir.display();
        let (ip, port) = (listen.ip(), listen.port());
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\n\
             database:\n    storage: \"{d}/db\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             zone:\n  - domain: cdn.example.net\n    file: \"{d}/cdn.example.net.zone\"\n    journal-content: none\n    zonefile-sync: -1\n"
        );
        let conf_path = dir.join("knot.conf");
        std::fs::write(&conf_path, conf).expect("knot config");
        let child = Command::new("ip")
            .args(["netns", "exec", &pair.server_ns, "knotd", "-c"])
            .arg(&conf_path)
            .spawn()
            .expect("start knotd");
        let knot = Self { child };
        let probe = Query::new("cdn.example.net.", 6).build();
        let ready = pair
            .in_ns(Side::Server, || {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("probe socket");
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("timeout");
                let mut buf = [0u8; 512];
                (0..100).any(|_| {
                    s.send_to(&probe, listen).is_ok() && s.recv(&mut buf).is_ok_and(|n| n > 12)
                })
            })
            .unwrap_or(false);
        assert!(ready, "knotd did not answer on {listen}");
        Some(knot)
    }

    /// The `knotd` process (`ip netns exec` execs it in place).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
