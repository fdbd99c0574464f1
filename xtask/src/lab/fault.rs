//! Faults the drills inject, each undone by a guard when dropped (also on an error or a panic):
//!
//! - [`Cut`]: bridge-family nftables rules in the switch namespace that cut one path and nothing
//!   else (the kernel here has no tc `gact` action, so `tc ... action drop` is not available).
//!   Each cut is its own table, `pglbcut_<name>`; `lab down` removes the whole switch namespace
//!   anyway.
//! - [`Stopped`]: a process held with SIGSTOP (a frozen VM, a paused container), continued with
//!   SIGCONT.
//! - [`ReadOnly`]: a folder made read-only by a read-only bind mount over itself (a full or
//!   failing disk as the writer sees it: every open for writing fails with EROFS).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

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

    /// Drops the UDP datagrams from the address `from` to `to` on port `port` (one direction,
    /// on `to`'s switch port); everything else between them passes. A cut of one protocol's
    /// messages (pglb's peer reports on 3002) that leaves VRRP and the probes alone.
    pub fn udp_to_port(name: &str, to: &Host, from: &str, port: u16) -> Result<Cut> {
        let dst_port = to.switch_port();
        Cut::install(name, &[format!("oifname \"{dst_port}\" ip saddr {from} ip daddr {} udp dport {port} drop", to.addr)])
            .with_context(|| format!("cutting UDP {from} -> {}:{port}", to.addr))
    }

    fn install(name: &str, rules: &[String]) -> Result<Cut> {
        let table = format!("pglbcut_{name}");
        let file = std::env::temp_dir().join(format!("pglb-{table}.nft"));
        std::fs::write(&file, nft_script(&table, rules)).with_context(|| format!("writing {}", file.display()))?;
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

/// The nft script of a cut: one bridge table of its own with one chain on the forward hook,
/// holding `rules`, so that healing it is deleting the table and touches no other cut.
fn nft_script(table: &str, rules: &[String]) -> String {
    let rules: String = rules.iter().map(|r| format!("    {r}\n")).collect();
    format!("table bridge {table} {{\n  chain cut {{\n    type filter hook forward priority 0;\n{rules}  }}\n}}\n")
}

impl Drop for Cut {
    fn drop(&mut self) {
        if !self.healed {
            let _ = sh::run(&mut ns_cmd(SWITCH_NS, "nft", ["delete", "table", "bridge", &self.table]));
        }
    }
}

/// A process stopped with SIGSTOP; SIGCONT when [`Stopped::resume`]d or dropped.
pub struct Stopped {
    pid: i32,
    what: String,
    resumed: bool,
}

fn kill(pid: i32, sig: libc::c_int, what: &str) -> Result<()> {
    // SAFETY: kill(2) has no memory preconditions; the caller names the process it means.
    if unsafe { libc::kill(pid, sig) } != 0 {
        bail!("signal {sig} to {what} (pid {pid}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Stopped {
    /// SIGSTOP to `pid` (`what` names it in messages).
    pub fn stop(pid: i32, what: &str) -> Result<Stopped> {
        kill(pid, libc::SIGSTOP, what)?;
        Ok(Stopped { pid, what: what.to_owned(), resumed: false })
    }

    /// SIGCONT now.
    pub fn resume(mut self) -> Result<()> {
        self.resumed = true;
        kill(self.pid, libc::SIGCONT, &self.what)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.resumed {
            let _ = kill(self.pid, libc::SIGCONT, &self.what);
        }
    }
}

/// A folder made read-only in place: `mount --bind DIR DIR`, then `mount -o remount,bind,ro
/// DIR`. Files in it stay readable; creating, renaming or opening one for writing fails with
/// EROFS. Unmounted by [`ReadOnly::release`] or when dropped.
pub struct ReadOnly {
    dir: PathBuf,
    mounted: bool,
}

impl ReadOnly {
    pub fn mount(dir: &Path) -> Result<ReadOnly> {
        let d = dir.to_str().context("a UTF-8 path")?;
        sh::run(&mut sh::cmd("mount", ["--bind", d, d])).with_context(|| format!("bind-mounting {d} over itself"))?;
        let guard = ReadOnly { dir: dir.to_owned(), mounted: true };
        sh::run(&mut sh::cmd("mount", ["-o", "remount,bind,ro", d])).with_context(|| format!("remounting {d} read-only"))?;
        Ok(guard)
    }

    /// Unmounts now: the folder is writable again.
    pub fn release(mut self) -> Result<()> {
        self.mounted = false;
        Self::umount(&self.dir)
    }

    fn umount(dir: &Path) -> Result<()> {
        sh::run(&mut sh::cmd("umount", [dir])).with_context(|| format!("unmounting the read-only bind mount on {}", dir.display()))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = Self::umount(&self.dir)
        {
            eprintln!("drill: {e:#}: unmount it by hand (`umount {}`) before `lab down`", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_is_one_table_with_its_rules_on_the_forward_hook() {
        let rules = ["iifname \"v-lb1\" ip daddr 172.20.0.10 drop".to_owned(), "oifname \"v-lb1\" ip saddr 172.20.0.10 drop".to_owned()];
        assert_eq!(
            nft_script("pglbcut_lb1_pg1", &rules),
            "table bridge pglbcut_lb1_pg1 {\n  chain cut {\n    type filter hook forward priority 0;\n    \
             iifname \"v-lb1\" ip daddr 172.20.0.10 drop\n    oifname \"v-lb1\" ip saddr 172.20.0.10 drop\n  }\n}\n"
        );
    }
}
