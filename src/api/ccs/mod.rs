//! Clone Cloud Store: the accessor (clients), the replicator's local routes (reads through the
//! topology) and remote routes (reads and orders from peers), and the CCS headers.

pub mod accessor;
pub mod catalogue;
pub mod orders;
pub mod replicator;
