//! Command-line surface (placeholder until the mount lands).
pub fn run() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
