//! `cachetta.toml(5)`: the config file's page, its keys from [`super::config_keys::KEYS`] (the
//! table README.md shows), its sections beside the commands' ones.

use roff::{bold, italic, roman, Roff};

use super::config_keys::KEYS;
use super::sections::{self, markdown};
use super::Page;

const DESCRIPTION: &[&str] = &[
    "The configuration of every cachetta command, in TOML. Flags override the file, which \
     overrides the defaults. A missing default file is fine; a missing file named with \
     --config, an unknown key or a bad value stops every command with exit status 2 and a \
     message naming the file, the line and the key.",
    "Durations are humantime (90s, 15m, 1h 30m, 7d) or bare seconds (0, \"0\" and \"0s\" are \
     all zero); sizes take KiB/MiB/GiB (or K/M/G, all powers of 1024) or a bare byte count.",
];

const RULES: &[&str] = &[
    "[[rule]] tables apply to the keys their match glob fits (* and ? within a segment, ** \
     across segments, {name} captures part of a segment and becomes CACHETTA_NAME in upper \
     case for the command); the first match wins and a rule inherits what it does not name \
     from the top level.",
    "A rule may set duration, stale, refresh, condition, fill_on_miss, refresh_timeout, \
     refresh_backoff, stale_if_error and early_refresh; one entry may override duration, \
     stale_duration and stale_if_error with setfattr(1) (user.cachetta.duration, ...).",
];

const EXAMPLE: &str = r#"# ~/.config/cachetta/config.toml
duration = "1h"
stale = "10m"

[[rule]]
match = "weather/{city}.json"
duration = "15m"
stale = "1h"
refresh = "curl -fsS \"https://wttr.in/$CACHETTA_CITY?format=j1\""
fill_on_miss = true
condition = "jq -e '.current_condition != null' >/dev/null""#;

/// The page, for cachetta `version`; `commands` names every command, for SEE ALSO.
pub(super) fn page(version: &str, commands: &[String]) -> Page {
    let mut roff = Roff::new();
    let source = format!("cachetta {version}");
    roff.control("TH", ["cachetta.toml", "5", "", &source, "cachetta manual"]);
    roff.control("SH", ["NAME"]);
    roff.text([roman("cachetta.toml - the configuration file of cachetta")]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([
        italic("$XDG_CONFIG_HOME"),
        roman("/cachetta/config.toml, or the file "),
        bold("--config"),
        roman(" names"),
    ]);
    roff.control("SH", ["DESCRIPTION"]);
    paragraphs(&mut roff, DESCRIPTION);
    roff.control("SH", ["KEYS"]);
    for row in KEYS {
        roff.control("TP", []);
        let mut tag = markdown(row.keys);
        tag.push(roman(" (default "));
        tag.extend(markdown(row.default));
        tag.push(roman(")"));
        roff.text(tag);
        roff.text(markdown(row.meaning));
    }
    roff.control("SH", ["RULES"]);
    paragraphs(&mut roff, RULES);
    roff.control("SH", ["EXAMPLE"]);
    roff.control("nf", []);
    for line in EXAMPLE.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff.extend([sections::for_command(Some("toml"), commands)]);
    Page {
        file_name: "cachetta.toml.5".to_owned(),
        roff: roff.render(),
    }
}

fn paragraphs(roff: &mut Roff, paragraphs: &[&str]) {
    for (i, paragraph) in paragraphs.iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(*paragraph)]);
    }
}
