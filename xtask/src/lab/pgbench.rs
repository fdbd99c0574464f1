//! What pgbench prints at the end of a run, read the same way by the bench and by the drills
//! that run pgbench (`syn-flood`, `lb-return`): in `lab` so that neither imports the other.

use anyhow::{Context as _, Result};

/// The value after `prefix` on the first line of pgbench's output that starts with it.
pub fn pgbench_field(text: &str, prefix: &str) -> Option<String> {
    text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(|r| r.trim().to_owned())
}

/// pgbench's (transactions processed, failed transactions). pgbench 15 always prints both
/// lines; without them a count of 0 would be a guess, so their absence is an error.
pub fn pgbench_counts(text: &str) -> Result<(u64, u64)> {
    let transactions = pgbench_field(text, "number of transactions actually processed:")
        .and_then(|s| s.split('/').next().and_then(|n| n.trim().parse().ok()))
        .with_context(|| format!("no transaction count in pgbench's output:\n{text}"))?;
    let failed = pgbench_field(text, "number of failed transactions:")
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .with_context(|| format!("no failed-transaction count in pgbench's output:\n{text}"))?;
    Ok((transactions, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of a pgbench 15 run with `-T` (no "/ N" after the count) and one with `-t`.
    const TIMED: &str = "transaction type: <builtin: select only>\nscaling factor: 10\nduration: 10 s\n\
        number of transactions actually processed: 243718\nnumber of failed transactions: 3 (0.001%)\n\
        latency average = 0.328 ms\ntps = 24371.210466 (without initial connection time)\n";
    const COUNTED: &str = "number of transactions actually processed: 800/800\nnumber of failed transactions: 0 (0.000%)\n";

    #[test]
    fn fields_are_read_after_their_prefix() {
        assert_eq!(pgbench_field(TIMED, "tps =").as_deref(), Some("24371.210466 (without initial connection time)"));
        assert_eq!(pgbench_field(TIMED, "latency average =").as_deref(), Some("0.328 ms"));
        assert_eq!(pgbench_field(TIMED, "no such field:"), None);
    }

    #[test]
    fn counts_are_read_or_refused() {
        assert_eq!(pgbench_counts(TIMED).unwrap(), (243_718, 3));
        assert_eq!(pgbench_counts(COUNTED).unwrap(), (800, 0));
        assert!(pgbench_counts("number of failed transactions: 0 (0.000%)\n").is_err(), "the transaction count must be there");
        assert!(pgbench_counts("number of transactions actually processed: 5\n").is_err(), "the failed count must be there");
        assert!(pgbench_counts("pgbench: error: connection to server failed\n").is_err());
    }
}
