//! `scripts/install.sh` and the systemd user unit it installs (checked with
//! `systemd-analyze verify` when that is installed).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::{assert_success, output, Isolated};

#[test]
fn install_script_installs_the_binary_and_a_unit_that_runs_it() {
    let home = Isolated::new();
    let prefix = home.root().join("prefix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let out = output(
        home.isolate(&mut Command::new("sh"))
            .arg(&script)
            .arg("--prefix")
            .arg(&prefix)
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_cachetta")),
    );
    assert_success("install.sh", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl --user enable --now cachetta"),
        "{stdout}"
    );

    let binary = prefix.join("bin/cachetta");
    let mode = fs::metadata(&binary).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "not executable: {mode:o}");
    let version = output(home.isolate(&mut Command::new(&binary)).arg("--version"));
    assert_success("installed cachetta --version", &version);

    let unit_path = prefix.join("lib/systemd/user/cachetta.service");
    let unit = fs::read_to_string(&unit_path).unwrap();
    let exec = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{unit}"))
            .to_string()
    };
    assert_eq!(
        exec("ExecStart="),
        format!("{} mount %h/.cachetta", binary.display())
    );
    assert_eq!(
        exec("ExecStop="),
        format!("{} unmount %h/.cachetta", binary.display())
    );
    for line in ["Type=notify", "Restart=on-failure"] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    let settings: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    for absent in ["PrivateTmp", "ProtectHome", "--daemon"] {
        assert!(
            settings.iter().all(|l| !l.contains(absent)),
            "{absent} in:\n{unit}"
        );
    }

    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: systemd-analyze is not installed; the unit was not verified")
        }
        Err(e) => panic!("run systemd-analyze: {e}"),
    }
}
