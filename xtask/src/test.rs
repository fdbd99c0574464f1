//! `cargo xtask test`: builds everything and runs every test tier, then tears the lab down.
//!
//! Tier 1–4 (unit, state-machine, simulation, BPF packet fixtures) run with `cargo test` over the
//! default members; tier 5 (network-namespace end-to-end with PostgreSQL) runs the `pglb-tests`
//! crate one test at a time, since those tests share the lab. Between them, promtool checks the
//! Prometheus alert rules and the example scrape config and runs the rules' unit tests
//! (config/prometheus), and the package stage builds the Debian package and checks it (contents,
//! unit, the packaged binary on the packaged config). The closing line counts every test of
//! every run.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result};

use crate::{lab, package, setup, sh};

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
    runs_failed: Vec<String>,
}

pub fn test(filter: Option<&str>) -> Result<ExitCode> {
    sh::require_root("test")?;
    if !setup::is_complete() {
        println!("test: prerequisites missing; running `cargo xtask setup` first");
        setup::setup()?;
    }
    let started = Instant::now();
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let mut tally = Tally::default();

    // Build first so a compile error is reported as such, not as failing tests.
    sh::run_inherit(&mut sh::cmd("cargo", ["build", "--all-targets"])).context("building the workspace")?;
    sh::run_inherit(&mut sh::cmd("cargo", ["build", "-p", "pglb-tests", "--tests"]))
        .context("building the end-to-end tests")?;

    // The default members: everything but lb-ebpf (built by lb-user) and pglb-tests (below).
    let mut unit = sh::cmd("cargo", ["test", "--no-fail-fast"]);
    if let Some(f) = filter {
        unit.args(["--", f]);
    }
    run_counted("unit, state machine, simulation and datapath fixtures", &mut unit, &mut tally)?;

    // No lab needed; a filter runs it only when it names it ("prometheus", "alert", ...).
    if filter.is_none_or(|f| PROMETHEUS_TIER.contains(f)) {
        prometheus_rules(&mut tally)?;
    }
    package_stage(filter, &mut tally);

    let mut e2e = sh::cmd("cargo", ["test", "-p", "pglb-tests", "--no-fail-fast", "--"]);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| lab::lb::workspace().join("target"));
    e2e.args(["--test-threads=1"])
        .args(filter)
        .env("PGLB_XTASK", &xtask)
        .env("PGLB_BIN", target.join("debug/pglb"));
    let e2e_result = run_counted("network-namespace end-to-end", &mut e2e, &mut tally);
    // The end-to-end tests clean up after themselves; this is the last guard.
    if lab::state()? != lab::LabState::Down {
        println!("test: a lab was left behind; tearing it down");
        lab::down()?;
    }
    e2e_result?;

    let secs = started.elapsed().as_secs_f64();
    println!();
    for run in &tally.runs_failed {
        println!("test: FAILED run: {run}");
    }
    if tally.ignored > 0 {
        println!("test: {} tests are #[ignore]d: every test must run", tally.ignored);
    }
    println!("test: finished in {secs:.0}s");
    println!("{} passed, {} failed, {} skipped", tally.passed, tally.failed, tally.ignored);
    let ok = tally.failed == 0 && tally.runs_failed.is_empty() && tally.ignored == 0 && tally.passed > 0;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs a `cargo test` command, echoing its output and adding up its `test result:` lines.
fn run_counted(name: &str, cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    println!("\n=== test tier: {name}\n$ {}", sh::display(cmd));
    let status = stream_stdout(cmd, |line| {
        if let Some(rest) = line.strip_prefix("test result: ") {
            tally.passed += count(rest, " passed");
            tally.failed += count(rest, " failed");
            tally.ignored += count(rest, " ignored");
        }
    })?;
    if !status.success() {
        tally.runs_failed.push(format!("{name} ({status})"));
    }
    Ok(())
}

/// Runs `cmd` with stdout piped, echoing each line and handing it to `on_line`; stderr goes to
/// this terminal.
fn stream_stdout(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<std::process::ExitStatus> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", sh::display(cmd)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        on_line(&line);
    }
    Ok(child.wait()?)
}

const PROMETHEUS_TIER: &str = "prometheus alert rules";
/// Relative to the workspace.
const PROMETHEUS_DIR: &str = "config/prometheus";

/// `promtool check rules` and `promtool check config` (one test each), then `promtool test
/// rules` over every `*.test.yml` of config/prometheus (one test per file: promtool reports a
/// file, not its test groups). promtool comes with the `prometheus` package (setup).
fn prometheus_rules(tally: &mut Tally) -> Result<()> {
    let dir = lab::lb::workspace().join(PROMETHEUS_DIR);
    println!("\n=== test tier: {PROMETHEUS_TIER}");
    for args in [["check", "rules", "pglb-rules.yml"], ["check", "config", "prometheus.yml"]] {
        let mut check = sh::cmd("promtool", args);
        check.current_dir(&dir);
        println!("$ (cd {PROMETHEUS_DIR} && {})", sh::display(&check));
        match check.status() {
            Ok(status) if status.success() => tally.passed += 1,
            outcome => {
                let why = outcome.map_or_else(|e| format!("could not start: {e}; run `cargo xtask setup`"), |s| s.to_string());
                tally.failed += 1;
                tally.runs_failed.push(format!("{PROMETHEUS_TIER}: promtool {} ({why})", args.join(" ")));
            }
        }
    }

    let mut files: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        tally.runs_failed.push(format!("{PROMETHEUS_TIER}: no *.test.yml in {PROMETHEUS_DIR}"));
        return Ok(());
    }
    let mut unit = sh::cmd("promtool", ["test", "rules"]);
    unit.args(&files).current_dir(&dir);
    println!("$ (cd {PROMETHEUS_DIR} && {})", sh::display(&unit));
    let mut counts = PromtoolCounts::default();
    match stream_stdout(&mut unit, |line| counts.line(line)) {
        Ok(status) => {
            // A file promtool announced but did not pass failed (its FAILED details go to
            // stderr); no file announced at all (promtool refused its arguments): all failed.
            let failed = if counts.files == 0 { files.len() as u64 } else { counts.files.saturating_sub(counts.passed) };
            tally.passed += counts.passed;
            tally.failed += failed;
            if !status.success() || failed > 0 {
                tally.runs_failed.push(format!("{PROMETHEUS_TIER}: promtool test rules ({status})"));
            }
        }
        Err(e) => {
            tally.failed += files.len() as u64;
            tally.runs_failed.push(format!("{PROMETHEUS_TIER}: promtool test rules ({e:#}); run `cargo xtask setup`"));
        }
    }
    Ok(())
}

/// Counts in `promtool test rules` stdout: each file opens with `Unit Testing:  FILE` and, when
/// every test group in it passed, a `  SUCCESS` line follows.
#[derive(Default, Debug, PartialEq)]
struct PromtoolCounts {
    files: u64,
    passed: u64,
}

impl PromtoolCounts {
    fn line(&mut self, line: &str) {
        if line.starts_with("Unit Testing:") {
            self.files += 1;
        } else if line.trim() == "SUCCESS" {
            self.passed += 1;
        }
    }
}

/// The Debian package: built with cargo-deb, its files listed, its unit verified, its binary run
/// on its config in a scratch root. Each check counts as one test (a failed build fails the
/// checks after it too); the checks whose names do not contain `filter` are not run.
fn package_stage(filter: Option<&str>, tally: &mut Tally) {
    const CHECKS: [&str; 4] = [
        "package::builds",
        "package::contents_list_binary_config_unit",
        "package::systemd_analyze_verify_accepts_the_unit",
        "package::packaged_binary_checks_packaged_config",
    ];
    let wanted: Vec<&str> = CHECKS.into_iter().filter(|c| filter.is_none_or(|f| c.contains(f))).collect();
    if wanted.is_empty() {
        return;
    }
    println!("\n=== test tier: debian package (cargo xtask package)");
    let started = Instant::now();
    let scratch = std::env::temp_dir().join(format!("pglb-package-test-{}", std::process::id()));
    let root = scratch.join("root");
    let mut report = |name: &str, result: Result<String>| {
        if !wanted.contains(&name) {
            return;
        }
        match result {
            Ok(detail) => {
                tally.passed += 1;
                println!("test {name} ... ok{}", if detail.is_empty() { String::new() } else { format!(": {}", detail.trim()) });
            }
            Err(e) => {
                tally.failed += 1;
                println!("test {name} ... FAILED: {e:#}");
            }
        }
    };
    let deb = package::build();
    let ready = deb.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|deb| {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        package::extract(deb, &root)?;
        Ok(deb.clone())
    });
    report(CHECKS[0], deb.as_ref().map(|d| d.display().to_string()).map_err(|e| anyhow::anyhow!("{e:#}")));
    let contents = ready.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|deb| {
        let paths = package::contents(deb)?;
        package::check_contents(&paths)?;
        package::check_conffiles(deb, &scratch)?;
        Ok(format!("{}, {} (conffile), {}", package::BINARY, package::CONFIG, package::UNIT))
    });
    report(CHECKS[1], contents);
    report(CHECKS[2], ready.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|_| package::verify_unit(&root).map(|_| String::new())));
    report(CHECKS[3], ready.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|_| package::check_config(&root)));
    let _ = std::fs::remove_dir_all(&scratch);
    println!("package stage: {:.0}s", started.elapsed().as_secs_f64());
}

/// Reads `N` in "ok. N passed; M failed; …" style summaries.
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split([';', '.'])
        .filter_map(|part| part.trim().strip_suffix(label.trim_start()))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{PromtoolCounts, count};

    #[test]
    fn counts_cargo_test_summary() {
        let s = "ok. 12 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(s, " passed"), 12);
        assert_eq!(count(s, " failed"), 1);
        assert_eq!(count(s, " ignored"), 3);
        assert_eq!(count("FAILED. 0 passed; 2 failed; 0 ignored", " failed"), 2);
    }

    #[test]
    fn counts_promtool_test_rules_output() {
        // promtool 2.42: a passing file prints SUCCESS; a failing one only a blank line on
        // stdout (FAILED and the details go to stderr).
        let out = "Unit Testing:  a.test.yml\n  SUCCESS\n\nUnit Testing:  b.test.yml\n\n\nUnit Testing:  c.test.yml\n  SUCCESS\n\n";
        let mut c = PromtoolCounts::default();
        out.lines().for_each(|l| c.line(l));
        assert_eq!(c, PromtoolCounts { files: 3, passed: 2 });
    }
}
