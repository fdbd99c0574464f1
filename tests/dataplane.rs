//! End-to-end tests in the lab: dataplane (to be written).
