//! Progress of the commands that may take long over many keys (`gc`, `ls`, `refresh --wait`):
//! a bar on stderr when stderr is a terminal, nothing at all otherwise, so piped output and
//! scripts see exactly what they saw before (SPEC §14).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Below this many steps a command is quick: no bar.
const WORTH_A_BAR: u64 = 200;

/// A bar for `total` steps of `what` ("checking", "waiting for"), or a hidden one: off a
/// terminal, or when there is little to do.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    if total < WORTH_A_BAR || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_job_or_a_pipe_gets_no_bar() {
        assert!(bar(10, "checking").is_hidden());
        // Tests run with stderr captured or piped: never a terminal here.
        if !std::io::stderr().is_terminal() {
            assert!(bar(1_000_000, "checking").is_hidden());
        }
    }
}
