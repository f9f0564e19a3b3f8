//! The domain model: records, orders, replica states and the pure rules on them (names,
//! hash encoding). No I/O; everything above may use it.

pub mod blocks;
pub mod dr;
pub mod hash;
pub mod names;
pub mod object;
pub mod order;
pub mod replica;
