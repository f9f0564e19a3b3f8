//! The data plane: the CCS accessor API, the replicator routes, and the streaming adapters.

pub mod accessor;
pub mod headers;
pub mod names;
pub mod objects;
pub mod replicator;
pub mod stream;
