//! The `healstore` command line. It only parses arguments, calls the library and prints;
//! see `cli/mod.rs` for the commands.

mod cli;

/// mimalloc rather than the system allocator: under many concurrent heals glibc's malloc and
/// free took about a quarter of the CPU time (the heal benchmark, 256 callers); with mimalloc
/// the same run executes about 11 % fewer instructions. SQLite allocates through the C
/// library's malloc either way.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
