//! The `healstore` command line. It only parses arguments, calls the library and prints;
//! see `cli/mod.rs` for the commands.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
