//! End-to-end tests in the lab: vip (to be written).
