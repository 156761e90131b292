//! The `cachetta` command: parsing, dispatch and exit codes are `cachetta::cli`.

fn main() -> std::process::ExitCode {
    cachetta::cli::run()
}
