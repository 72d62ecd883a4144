//! `agentic-webhook`: see `agentic-webhook --help`.

fn main() -> std::process::ExitCode {
    agentic_webhook::cli::main()
}
