//! HTTP plumbing shared by every API family: the server loop, the common CCS headers, metrics.

pub mod auth;
pub mod common;
pub mod metrics;
pub mod peer;
pub mod ratelimit;
pub mod server;
