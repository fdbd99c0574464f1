//! `cargo xtask bench [--json FILE]`: pgbench through pglb, HAProxy and direct, alternated.

use anyhow::{Result, bail};

pub fn bench(_json: Option<&std::path::Path>) -> Result<()> {
    bail!("bench: not implemented yet")
}
