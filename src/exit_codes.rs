//! The exit codes of the `cachetta` command (SPEC §9), and [`Failure`]: a message with the code
//! it ends the process with. `cli` prints a failure once; nothing else turns one into a number.

use std::fmt;

/// How the process ends. Scripts test these numbers, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success,
    /// The thing asked about is not there, an I/O failure, or a mount that failed after its
    /// start-up checks passed.
    Failure,
    /// Bad usage or configuration, or a mount refused by its start-up checks (what clap also
    /// exits with for a bad flag).
    Usage,
}

impl ExitCode {
    /// Every code, in order: what the man pages' EXIT STATUS sections list.
    pub const ALL: [ExitCode; 3] = [ExitCode::Success, ExitCode::Failure, ExitCode::Usage];

    pub fn code(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
        }
    }

    /// What the code means, for a reader of the man pages (EXIT STATUS).
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "Success.",
            ExitCode::Failure => {
                "The key, entry or mount asked about is not there, a refresh waited for did \
                 not replace its entry, an I/O error, or a mount that failed after its \
                 start-up checks passed."
            }
            ExitCode::Usage => {
                "Bad usage (an unknown flag, a bad value) or configuration (the message names \
                 the file, line and key), or a mount refused by its start-up checks (the \
                 mountpoint inside the backing dir or the other way round, already mounted, \
                 or not empty)."
            }
        }
    }

    /// The code a `--daemon` child reported through the readiness pipe (never 0 there).
    pub fn from_reported(code: u8) -> ExitCode {
        match code {
            2 => ExitCode::Usage,
            _ => ExitCode::Failure,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// A command that failed: `cli` prints `cachetta: {message}` to stderr and exits with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    /// Exit code 1: not there, or an I/O failure.
    pub fn failed(message: impl fmt::Display) -> Failure {
        Failure {
            code: ExitCode::Failure,
            message: message.to_string(),
        }
    }

    /// Exit code 2: bad usage or configuration, or a refused mount.
    pub fn usage(message: impl fmt::Display) -> Failure {
        Failure {
            code: ExitCode::Usage,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// What every command returns: `Ok` with the code to exit with (any message already
/// printed), or a failure for `cli` to print.
pub type Outcome = Result<ExitCode, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_ones_scripts_test() {
        assert_eq!(ExitCode::Success.code(), 0);
        assert_eq!(ExitCode::Failure.code(), 1);
        assert_eq!(ExitCode::Usage.code(), 2);
    }

    #[test]
    fn all_lists_each_code_once_in_order() {
        let codes: Vec<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes, [0, 1, 2]);
    }

    #[test]
    fn converts_to_the_process_exit_code() {
        assert_eq!(
            std::process::ExitCode::from(ExitCode::Success),
            std::process::ExitCode::SUCCESS
        );
        assert_eq!(
            std::process::ExitCode::from(ExitCode::Failure),
            std::process::ExitCode::FAILURE
        );
        assert_eq!(
            std::process::ExitCode::from(ExitCode::Usage),
            std::process::ExitCode::from(2)
        );
    }

    #[test]
    fn a_reported_code_comes_back_as_itself() {
        for code in [ExitCode::Failure, ExitCode::Usage] {
            assert_eq!(ExitCode::from_reported(code.code()), code);
        }
    }

    #[test]
    fn failures_carry_their_code_and_print_their_message() {
        let failure = Failure::usage("bad flag");
        assert_eq!(failure.code, ExitCode::Usage);
        assert_eq!(failure.to_string(), "bad flag");
        assert_eq!(Failure::failed("gone").code, ExitCode::Failure);
    }
}
