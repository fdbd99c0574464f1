//! Typed TOML configuration of a pglb instance and its validation.
