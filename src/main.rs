//! The `baton` command; everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    baton::cli::main()
}
