//! The failover state machine (sans-IO): probe observations in, actions out.
