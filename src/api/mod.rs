//! The API rooms: one per family. Each parses its requests, calls the object core or an
//! engine, and renders the family's envelope. The router that puts them together is
//! `crate::router`.

pub mod admin;
pub mod alfresco;
pub mod backbeat;
pub mod ccs;
pub mod console;
pub mod dr;
pub mod rucio;
pub mod status;
pub mod trust;

#[cfg(test)]
mod admin_props;
