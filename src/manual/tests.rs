//! The man pages: the config keys' table matches README.md and the config file's parser, each
//! page has the sections SPEC §14 asks for, and Markdown cells read right in roff.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use roff::{bold, roman};

use super::config_keys::{key_names, markdown_table, KEYS};
use super::sections::markdown;
use super::{pages, Page};
use crate::cli::Cli;
use crate::config::{Config, Overrides};

fn all_pages() -> Vec<Page> {
    pages(Cli::command())
}

#[test]
fn readme_shows_the_config_keys_table_as_it_is() {
    let readme = include_str!("../../README.md");
    let table = markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's configuration table differs from src/manual/config_keys.rs; put this \
         table in README.md:\n{table}"
    );
}

#[test]
fn every_key_the_config_file_accepts_is_documented_once() {
    // The parser names every key it accepts when it meets one it does not.
    let error = Config::from_toml(
        "no_such_key = 1\n",
        Path::new("config.toml"),
        &Overrides::default(),
    )
    .map(|_| ())
    .expect_err("an unknown key is refused");
    let expected = error
        .message
        .split_once("expected ")
        .expect("the message lists the expected keys")
        .1;
    let accepted: BTreeSet<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|key| *key != "rule")
        .collect();
    let documented: Vec<&str> = KEYS.iter().flat_map(key_names).collect();
    let documented_set: BTreeSet<&str> = documented.iter().copied().collect();
    assert_eq!(documented.len(), documented_set.len(), "{documented:?}");
    assert_eq!(documented_set, accepted);
}

#[test]
fn there_is_a_page_for_the_command_each_subcommand_and_the_config_file() {
    let names: Vec<String> = all_pages().into_iter().map(|p| p.file_name).collect();
    for name in [
        "cachetta.1",
        "cachetta-mount.1",
        "cachetta-unmount.1",
        "cachetta-ls.1",
        "cachetta-info.1",
        "cachetta-gc.1",
        "cachetta-refresh.1",
        "cachetta-stats.1",
        "cachetta-completions.1",
        "cachetta.toml.5",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("-man.") || n.contains("-help.")),
        "{names:?}"
    );
}

#[test]
fn every_page_has_environment_files_and_exit_status_once() {
    for page in all_pages() {
        for heading in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH ENVIRONMENT",
            ".SH FILES",
            ".SH \"EXIT STATUS\"",
            ".SH \"SEE ALSO\"",
        ] {
            let count = page.roff.lines().filter(|l| *l == heading).count();
            assert_eq!(count, 1, "{heading} in {}:\n{}", page.file_name, page.roff);
        }
        let preambles = page.roff.matches(".ds Aq \\(aq").count();
        assert_eq!(preambles, 1, "{}:\n{}", page.file_name, page.roff);
        assert!(page.roff.starts_with(".ie "), "{}", page.file_name);
    }
}

#[test]
fn the_mount_page_lists_what_the_mount_reads() {
    let pages = all_pages();
    let mount = pages
        .iter()
        .find(|p| p.file_name == "cachetta-mount.1")
        .unwrap();
    for text in [
        "NOTIFY_SOCKET",
        "XDG_STATE_HOME",
        "cachetta.log",
        "cachetta.toml",
    ] {
        assert!(mount.roff.contains(text), "{text}:\n{}", mount.roff);
    }
    let gc = pages
        .iter()
        .find(|p| p.file_name == "cachetta-gc.1")
        .unwrap();
    assert!(!gc.roff.contains("NOTIFY_SOCKET"), "{}", gc.roff);
}

#[test]
fn the_config_page_lists_every_key_with_its_default() {
    let pages = all_pages();
    let page = pages
        .iter()
        .find(|p| p.file_name == "cachetta.toml.5")
        .unwrap();
    assert!(page.roff.contains(".TH cachetta.toml 5"), "{}", page.roff);
    for key in KEYS.iter().flat_map(key_names) {
        let escaped = key.replace('-', "\\-");
        assert!(
            page.roff.contains(&format!("\\fB{escaped}\\fR")),
            "{key}:\n{}",
            page.roff
        );
    }
    assert!(
        page.roff.contains("\\fBduration\\fR (default \\fB7d\\fR)"),
        "{}",
        page.roff
    );
}

#[test]
fn markdown_code_is_bold_and_a_link_is_its_text() {
    assert_eq!(
        markdown("keep it (`--stale`); see [docs/x.md](docs/x.md#y) now"),
        vec![
            roman("keep it ("),
            bold("--stale"),
            roman("); see "),
            roman("docs/x.md"),
            roman(" now"),
        ]
    );
    assert_eq!(
        markdown("`a`, `b`"),
        vec![bold("a"), roman(", "), bold("b")]
    );
    assert_eq!(
        markdown("a lone ` and [ stay"),
        vec![roman("a lone ` and [ stay")]
    );
}
