//! The `baton` command; everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    baton_server::cli::main()
}
