//! The `ezfs` command; everything is in the library's `cli` module.

fn main() {
    std::process::exit(ezfs::cli::run());
}
