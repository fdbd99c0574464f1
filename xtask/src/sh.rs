//! Running external commands with errors that say what was run and what it printed.

use std::{
    ffi::OsStr,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Renders a command line for logs and error messages.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with captured output; fails with its stderr when it exits non-zero.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with captured output and returns it whatever the exit status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))
}

/// Runs `cmd` with captured output, discarding stdout; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

/// Runs `cmd` attached to this terminal; fails on a non-zero exit.
pub fn run_inherit(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// `Command::new(program).args(args)` in one call.
pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with one clear line unless this process runs as root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask {what}` must run as root (it manages network namespaces, BPF and PostgreSQL processes): run it with sudo or as root");
    }
    Ok(())
}
