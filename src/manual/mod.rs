//! The man pages (SPEC §14): `cachetta(1)` and one page per command (`cachetta-mount(1)`, ...),
//! rendered by clap_mangen from the same clap definitions as `--help`, so a flag cannot be in
//! one and not the other, followed by the sections clap knows nothing of (ENVIRONMENT, FILES,
//! EXIT STATUS, SEE ALSO); and `cachetta.toml(5)` from the table of config keys
//! ([`config_keys`]). Writing them to a directory is `cachetta man --dir DIR`
//! (`commands::man`); packaging gzips and installs them (`scripts/package`).

pub mod config_keys;
mod config_page;
mod sections;

use std::io;
use std::path::{Path, PathBuf};

use clap_mangen::Man;

/// One man page: its file name (`cachetta-mount.1`) and its roff source.
pub struct Page {
    pub file_name: String,
    pub roff: String,
}

/// Every page, for the command line `cli` (the `cachetta` command as clap defines it).
/// Hidden commands (`man` itself) get no page.
pub fn pages(cli: clap::Command) -> Vec<Page> {
    let mut cli = cli.disable_help_subcommand(true);
    // Building names each subcommand `cachetta-mount` (its page) and `cachetta mount` (its
    // synopsis), as clap_mangen's own `generate_to` does.
    cli.build();
    let commands: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let names: Vec<String> = commands.iter().map(|c| c.get_name().to_owned()).collect();
    let version = cli.get_version().unwrap_or_default().to_owned();

    let source = format!("cachetta {version}");
    let mut pages = vec![command_page(cli, None, &names, &source)];
    for command in commands {
        let name = command.get_name().to_owned();
        pages.push(command_page(command, Some(&name), &names, &source));
    }
    pages.push(config_page::page(&version, &names));
    pages
}

/// Write every page into `dir` (created if missing); the paths written, in order.
pub fn write_all(cli: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    pages(cli)
        .into_iter()
        .map(|page| {
            let path = dir.join(&page.file_name);
            std::fs::write(&path, page.roff)?;
            Ok(path)
        })
        .collect()
}

/// The page of `command`: `subcommand` is its name under `cachetta` (None: the top page);
/// `all` names every command, for SEE ALSO; `source` is the title's "cachetta VERSION".
fn command_page(
    command: clap::Command,
    subcommand: Option<&str>,
    all: &[String],
    source: &str,
) -> Page {
    let man = Man::new(command.clone())
        .source(source)
        .manual("cachetta manual");
    let mut page = Page {
        file_name: man.get_filename(),
        roff: String::new(),
    };
    page.add(|w| man.render_title(w));
    page.add(|w| man.render_name_section(w));
    page.add(|w| man.render_synopsis_section(w));
    page.add(|w| man.render_description_section(w));
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        page.add(|w| man.render_options_section(w));
    }
    if command.get_subcommands().any(|c| !c.is_hide_set()) {
        page.add(|w| man.render_subcommands_section(w));
    }
    page.add(|w| sections::for_command(subcommand, all).to_writer(w));
    // Subcommands carry no version of their own (clap_mangen would panic).
    if command.get_version().is_some() {
        page.add(|w| man.render_version_section(w));
    }
    page
}

impl Page {
    /// Append one rendered part. Each part opens with roff's two-line preamble that defines
    /// the apostrophe string (`.ie \n(.g .ds Aq ...`); a page needs it once.
    fn add(&mut self, render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        render(&mut out).expect("render a man page into memory");
        let part = String::from_utf8(out).expect("roff from UTF-8 text is UTF-8");
        let body = match self.roff.is_empty() {
            true => part.as_str(),
            false => skip_preamble(&part),
        };
        self.roff.push_str(body);
    }
}

/// `part` without its first two lines if they are the apostrophe preamble.
fn skip_preamble(part: &str) -> &str {
    if !part.starts_with(".ie \\n(.g .ds Aq") {
        return part;
    }
    part.splitn(3, '\n').nth(2).unwrap_or("")
}

#[cfg(test)]
mod tests;
