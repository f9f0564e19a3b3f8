//! Control-plane API families, one file each.

pub mod admin;
pub mod backbeat;
