//! The engines: long-running work over the object core. Each takes the narrow handles it
//! needs; none of them knows HTTP routes exist (the API rooms call them).
//!
//! Order (an engine uses only those listed before it): topology, tasks, replication,
//! catalogue, definitions, dr.

pub mod catalogue;
pub mod definitions;
pub mod dr;
pub mod replication;
pub mod tasks;
pub mod topology;
