//! Command-line clients of a running site (the `mirrorgate` subcommands other than `serve`).

pub mod definitions;
