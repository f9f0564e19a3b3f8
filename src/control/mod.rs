//! Control-plane API families, one file each.

pub mod admin;
pub mod alfresco;
pub mod backbeat;
pub mod dr;
pub mod rucio;
