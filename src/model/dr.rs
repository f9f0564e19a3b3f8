//! Disaster-recovery server statuses, as the Acronis DR seed names them.

/// Server statuses (the seed's values).
pub mod status {
    pub const STAND_BY: &str = "STAND_BY";
    pub const STARTING_FAILOVER_PROD: &str = "STARTING_FAILOVER_PROD";
    pub const FAILOVER_PROD: &str = "FAILOVER_PROD";
    pub const STARTING_FAILOVER_TEST: &str = "STARTING_FAILOVER_TEST";
    pub const FAILOVER_TEST: &str = "FAILOVER_TEST";
    pub const STOPPING_FAILOVER: &str = "STOPPING_FAILOVER";
}
