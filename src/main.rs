fn main() -> std::process::ExitCode {
    cachetta::cli::run()
}
