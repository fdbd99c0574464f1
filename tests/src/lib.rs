//! End-to-end tests of pglb in the network-namespace lab (see the `tests` folder).
