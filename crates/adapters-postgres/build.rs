//! Rebuilds the crate when a migration is added, removed or changed: refinery embeds the SQL
//! files of the top-level `migrations/` folder at compile time, and Cargo would not otherwise
//! notice a new file there.
#![allow(
    clippy::print_stdout,
    reason = "build scripts talk to Cargo through stdout"
)]

fn main() {
    println!("cargo::rerun-if-changed=../../migrations");
}
