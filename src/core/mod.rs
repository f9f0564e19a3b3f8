//! The object core: every path that stores, deletes, repairs or serves an object goes through
//! here. Name rules and the CCS wire format, store / delete / restore / open-verified, the
//! streaming adapters (verify, zstd), the replica rows each write keeps, and the orders a
//! write fans out. It knows the metadata store and storage, never HTTP routes or engines:
//! what the engines must hear about a change reaches them through [`Hooks`].

pub mod buckets;
pub mod digest;
pub mod import;
pub mod objects;
pub mod replicas;
pub mod site;
pub mod stream;
pub mod uploads;
pub mod wire;

pub use site::{Hooks, Site};
