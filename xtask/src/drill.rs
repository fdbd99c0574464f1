//! `cargo xtask drill SCENARIO [--runs N] [--json FILE]`: failover drills on the lab.

use anyhow::{Result, bail};

pub fn drill(scenario: &str, _runs: u32, _json: Option<&std::path::Path>) -> Result<()> {
    bail!("drill `{scenario}`: drills are not implemented yet")
}
