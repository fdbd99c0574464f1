//! `cargo xtask run`: setup if needed, build, lab up, print how to connect, follow the logs in
//! the foreground; Ctrl-C tears the lab down.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::{lab, setup, sh};

extern "C" fn ignore_interrupt(_: libc::c_int) {}

pub fn run() -> Result<()> {
    sh::require_root("run")?;
    if !setup::is_complete() {
        println!("run: prerequisites missing; running `cargo xtask setup` first");
        setup::setup()?;
    }
    sh::run_inherit(&mut sh::cmd("cargo", ["build"])).context("building the workspace")?;
    lab::up(false, false)?;
    println!("\n{}\n", lab::connect_help());

    let logs: Vec<PathBuf> = lab::topology::HOSTS
        .iter()
        .map(|h| h.dir().join("pglb.log"))
        .filter(|p| p.exists())
        .collect();
    println!("run: following pglb's logs (lb1, lb2); PostgreSQL's are in /run/pglb-lab/pgN/postgres.log");
    println!("run: press Ctrl-C to stop and tear the lab down");
    // The handler (reset to default in the child) keeps this process alive on Ctrl-C so it can
    // tear the lab down after `tail` exits.
    // SAFETY: installs a handler that does nothing, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, ignore_interrupt as *const () as libc::sighandler_t) };
    let mut tail = sh::cmd("tail", ["-n", "5", "-F"]);
    tail.args(&logs);
    let _ = tail.status();
    println!("\nrun: stopping");
    lab::down()
}
