//! The `deed` binary: the command line only; see `deed::cli`.

fn main() {
    std::process::exit(deed::cli::main());
}
