//! `cargo xtask install`: the files it writes (its own code, included), checked with
//! systemd's own `systemd-analyze verify`, and a second install that must keep the
//! operator's config and environment file.
use std::{path::PathBuf, process::Command};

use geodns_tests::{
    daemon::geodns_bin,
    files::{examples, TempDir},
};

#[path = "../../xtask/src/install.rs"]
#[allow(dead_code, reason = "the xtask's module; this test uses part of it")]
mod install;

#[test]
fn install_writes_a_unit_systemd_accepts_and_keeps_the_config() {
    let dir = TempDir::new("install");
    let layout = install::Layout {
        root: PathBuf::from("/"),
        prefix: dir.path().join("usr"),
        config_dir: dir.path().join("etc/geodns"),
        unit_dir: dir.path().join("etc/systemd/system"),
    };
    let report =
        install::install_files(&layout, &geodns_bin(), &examples(), "eth7").expect("first install");
    eprintln!("{}", report.join("\n"));
    let unit = layout.unit_dir.join("geodns.service");
    let text = std::fs::read_to_string(&unit).expect("the unit");
    for want in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=always",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
        "EnvironmentFile=",
    ] {
        assert!(text.contains(want), "{want} in the unit:\n{text}");
    }
    assert!(
        !text.contains("CAP_SYS_ADMIN CAP") && !text.contains("User=nobody"),
        "no full root capabilities"
    );
    // systemd's own check of the unit (systemd need not run: it reads the file).
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; `cargo xtask test` installs it)");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("geodns.service"),
        "systemd-analyze has something to say about the unit: {said}"
    );
    let env = std::fs::read_to_string(layout.env_file()).expect("env file");
    assert!(env.contains("GEODNS_IFACE=eth7"), "{env}");
    // The example config is a working one.
    let compiled = Command::new(layout.binary())
        .args(["compile", "--config"])
        .arg(layout.config())
        .output()
        .expect("the installed binary");
    assert!(
        compiled.status.success(),
        "the example config compiles: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    assert!(
        String::from_utf8_lossy(
            &Command::new(layout.binary())
                .arg("--version")
                .output()
                .expect("--version")
                .stdout
        )
        .starts_with("geodns "),
        "the installed binary says what it is"
    );

    // The operator edits both; a second install keeps them.
    std::fs::write(layout.config(), "# mine\n").expect("edit the config");
    std::fs::write(layout.env_file(), "GEODNS_IFACE=mine0\n").expect("edit the env file");
    let report = install::install_files(&layout, &geodns_bin(), &examples(), "eth7")
        .expect("second install");
    assert_eq!(
        std::fs::read_to_string(layout.config()).expect("config"),
        "# mine\n",
        "never overwritten: {report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(layout.env_file()).expect("env"),
        "GEODNS_IFACE=mine0\n"
    );
    assert!(report
        .iter()
        .any(|l| l.contains("kept") && l.contains("geodns.toml")));
}
