//! Faults on the lab's network: bridge-family nftables rules in the switch namespace that cut
//! one path and nothing else (the kernel here has no tc `gact` action, so `tc ... action drop`
//! is not available). Each cut is its own table, `pglbcut_<name>`; [`Cut`] removes it when
//! dropped, and `lab down` removes the whole switch namespace anyway.

use anyhow::{Context as _, Result};

use super::{
    net::ns_cmd,
    topology::{Host, SWITCH_NS},
};
use crate::sh;

/// A path cut in the switch; healed when dropped (or by [`Cut::heal`]).
pub struct Cut {
    table: String,
    healed: bool,
}

impl Cut {
    /// Drops every IPv4 frame between `host` and the address `addr` (both directions), on the
    /// host's switch port. ARP still passes (neighbour entries stay; only IP is cut).
    pub fn host_from_addr(name: &str, host: &Host, addr: &str) -> Result<Cut> {
        let port = host.switch_port();
        Cut::install(name, &[
            format!("iifname \"{port}\" ip daddr {addr} drop"),
            format!("oifname \"{port}\" ip saddr {addr} drop"),
        ])
        .with_context(|| format!("cutting {} from {addr}", host.name))
    }

    /// Drops every frame between two hosts' switch ports (both directions), ARP included.
    pub fn between(name: &str, a: &Host, b: &Host) -> Result<Cut> {
        let (pa, pb) = (a.switch_port(), b.switch_port());
        Cut::install(name, &[format!("iifname \"{pa}\" oifname \"{pb}\" drop"), format!("iifname \"{pb}\" oifname \"{pa}\" drop")])
            .with_context(|| format!("cutting {} from {}", a.name, b.name))
    }

    fn install(name: &str, rules: &[String]) -> Result<Cut> {
        let table = format!("pglbcut_{name}");
        let mut script = format!("table bridge {table} {{\n  chain cut {{\n    type filter hook forward priority 0;\n");
        for r in rules {
            script.push_str(&format!("    {r}\n"));
        }
        script.push_str("  }\n}\n");
        let file = std::env::temp_dir().join(format!("pglb-{table}.nft"));
        std::fs::write(&file, &script).with_context(|| format!("writing {}", file.display()))?;
        let result = sh::run(&mut ns_cmd(SWITCH_NS, "nft", [std::ffi::OsStr::new("-f"), file.as_os_str()]));
        let _ = std::fs::remove_file(&file);
        result.context("nft (is nftables installed? `cargo xtask setup`)")?;
        Ok(Cut { table, healed: false })
    }

    /// Removes the rules now.
    pub fn heal(mut self) -> Result<()> {
        self.healed = true;
        sh::run(&mut ns_cmd(SWITCH_NS, "nft", ["delete", "table", "bridge", &self.table])).with_context(|| format!("healing cut {}", self.table))
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if !self.healed {
            let _ = sh::run(&mut ns_cmd(SWITCH_NS, "nft", ["delete", "table", "bridge", &self.table]));
        }
    }
}
