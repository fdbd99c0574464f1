//! End-to-end tests in the lab: failover (to be written).
