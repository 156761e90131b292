//! Man pages and completions (SPEC §14): every flag `--help` shows is on the command's man
//! page, and `cachetta completions SHELL` prints a script bash accepts.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use regex::Regex;

use crate::common::{assert_success, output, Isolated, OutputAssertExt};

fn stdout_of(home: &Isolated, args: &[&str]) -> String {
    let out = home.run(args);
    assert_success(&args.join(" "), &out);
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The commands `cachetta --help` lists, but `help`.
fn commands(home: &Isolated) -> Vec<String> {
    let help = stdout_of(home, &["--help"]);
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// The flags (`-v`, `--verbose`) of the option lines of a `--help` text.
fn flags_in_help(help: &str) -> BTreeSet<String> {
    let flag = Regex::new(r"^-{1,2}[A-Za-z][A-Za-z0-9-]*").unwrap();
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            let names = l.split("  ").next().unwrap_or_default();
            names
                .split(", ")
                .filter_map(|n| flag.find(n).map(|m| m.as_str().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A roff page as plain text: `\-` is `-`, font changes are gone.
fn page_text(path: &Path) -> String {
    let roff = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    roff.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
}

#[test]
fn every_flag_in_help_is_on_the_commands_man_page() {
    let home = Isolated::new();
    let dir = home.root().join("man");
    let written = stdout_of(&home, &["man", "--dir", dir.to_str().unwrap()]);
    let commands = commands(&home);
    assert!(commands.iter().any(|c| c == "mount"), "{commands:?}");
    assert!(commands.iter().any(|c| c == "completions"), "{commands:?}");
    assert!(!commands.iter().any(|c| c == "man"), "man is hidden");

    let mut pages = vec![(vec![], "cachetta.1".to_owned())];
    pages.extend(
        commands
            .iter()
            .map(|c| (vec![c.as_str()], format!("cachetta-{c}.1"))),
    );
    for (command, page) in pages {
        let path = dir.join(&page);
        assert!(
            written.contains(path.to_str().unwrap()),
            "{page}: {written}"
        );
        let text = page_text(&path);
        for help_flag in ["--help", "-h"] {
            let args: Vec<&str> = command.iter().copied().chain([help_flag]).collect();
            let flags = flags_in_help(&stdout_of(&home, &args));
            assert!(flags.contains("--help"), "{args:?}: {flags:?}");
            if command == ["mount"] {
                for expected in ["--log-file", "-v", "--verbose", "--backing"] {
                    assert!(flags.contains(expected), "{expected}: {flags:?}");
                }
            }
            for flag in flags {
                let on_page = Regex::new(&format!(r"(^|[^A-Za-z0-9-]){flag}($|[^A-Za-z0-9-])"))
                    .unwrap()
                    .is_match(&text);
                assert!(on_page, "{flag} (from {args:?}) is not in {page}:\n{text}");
            }
        }
    }
    assert!(dir.join("cachetta.toml.5").is_file());
}

#[test]
fn completions_print_a_script_for_bash_zsh_and_fish() {
    let home = Isolated::new();
    for (shell, opening) in [
        ("bash", "_cachetta()"),
        ("zsh", "#compdef cachetta"),
        ("fish", "complete -c cachetta"),
    ] {
        let script = stdout_of(&home, &["completions", shell]);
        assert!(script.contains(opening), "{shell}:\n{script}");
        // fish names long flags without their dashes (`-l lru-bytes`).
        for word in ["mount", "backing", "lru-bytes", "completions"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
}

#[test]
fn the_bash_completion_script_loads_and_completes_cachetta() {
    let home = Isolated::new();
    let script = home.root().join("cachetta.bash");
    fs::write(&script, stdout_of(&home, &["completions", "bash"])).unwrap();
    match Command::new("bash").arg("--version").output() {
        Ok(_) => {
            let out = output(
                Command::new("bash")
                    .arg("-c")
                    .arg(r#"source "$1" && complete -p cachetta"#)
                    .arg("bash")
                    .arg(&script),
            );
            assert_success("bash: source the script", &out);
        }
        Err(e) => eprintln!("note: bash is not available ({e}); the script was not loaded"),
    }
}

#[test]
fn completions_for_an_unknown_shell_are_a_usage_error() {
    Isolated::new()
        .run(&["completions", "tcsh"])
        .assert()
        .code(2);
}
