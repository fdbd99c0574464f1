//! The lab's WAL archive (`archive_mode`, `/run/pglb-lab/archive`) and `pglb node rejoin
//! --restore-target-wal`: a former primary that was away while the WAL it needs was recycled,
//! on itself and on the new primary, still rewinds and streams again.

use std::{path::Path, time::Duration};

use pglb_tests::{Lab, STATE_DIR, app_sql, ok, pglb_bin, run, stderr, stdout, superuser_sql, wait_until};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const NODES: [(&str, &str); 3] = [("pg1", "172.20.0.10"), ("pg2", "172.20.0.11"), ("pg3", "172.20.0.12")];

fn archive(segment: &str) -> bool {
    Path::new(STATE_DIR).join("archive").join(segment).exists()
}

fn in_pg_wal(node: &str, segment: &str) -> bool {
    Path::new(STATE_DIR).join(node).join("data/pg_wal").join(segment).exists()
}

/// The WAL segment file holding `lsn_sql` (an expression) on `node`.
fn segment(node: &str, lsn_sql: &str) -> String {
    superuser_sql(node, &format!("SELECT pg_walfile_name({lsn_sql})"))
}

#[test]
fn rejoin_after_wal_recycling_restores_from_the_archive() {
    let _lab = Lab::up();

    // pg1 keeps no WAL beyond its last checkpoint (the lab's default is 256MB precisely so that
    // a rewind without an archive works), and its slots hold at most 16MB (a common production
    // cap on what a dead standby's slot may keep): after a crash a slot restarts from the
    // position saved at the last checkpoint, which would otherwise keep everything since.
    superuser_sql("pg1", "ALTER SYSTEM SET wal_keep_size = 0");
    superuser_sql("pg1", "ALTER SYSTEM SET max_slot_wal_keep_size = '16MB'");
    superuser_sql("pg1", "SELECT pg_reload_conf()");
    app_sql("pg1", "CREATE TABLE archived (i int, phase text)");
    // A checkpoint, then two finished segments after it: the last checkpoint before the fork
    // lies two segments behind what the slots keep.
    superuser_sql("pg1", "CHECKPOINT");
    let needed = segment("pg1", "(SELECT redo_lsn FROM pg_control_checkpoint())");
    let mut last_finished = String::new();
    for round in 0..2 {
        app_sql("pg1", &format!("INSERT INTO archived SELECT g, 'before {round}' FROM generate_series(1, 1000) g"));
        // pg_switch_wal returns the end of the segment it finished; pg_walfile_name names that one.
        last_finished = segment("pg1", "pg_switch_wal()");
    }
    assert!(last_finished > needed, "two switches after the checkpoint: {needed} then {last_finished}");
    wait_until(Duration::from_secs(20), "pg1 to archive every finished segment", || {
        superuser_sql("pg1", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= last_finished
    });
    assert!(archive(&needed), "{needed} (pg1's last checkpoint) is not in the archive");
    assert!(in_pg_wal("pg1", &needed), "{needed} must still be in pg1's pg_wal before the crash");
    let before: u64 = app_sql("pg1", "SELECT count(*) FROM archived").parse().unwrap();

    // pg1 crashes; pglb promotes a standby.
    ok(&["lab", "exec", "pg1", "--", "runuser", "-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"),
         "-D", &format!("{STATE_DIR}/pg1/data"), "-m", "immediate", "-w", "stop"]);
    let mut writer = String::new();
    wait_until(Duration::from_secs(30), "pglb to promote a standby after pg1's crash", || {
        let out = run(&["lab", "psql", "--", "-Atc", "SELECT inet_server_addr(), pg_is_in_recovery()"]);
        writer = stdout(&out).trim().to_owned();
        out.status.success() && writer.ends_with("|f") && !writer.starts_with("172.20.0.10")
    });
    let new_addr = writer.split('|').next().unwrap().to_owned();
    let new = NODES.iter().find(|(_, a)| *a == new_addr).unwrap_or_else(|| panic!("unknown writer {writer}")).0;
    eprintln!("{new} ({new_addr}) promoted");

    // Written while pg1 is away, then the new primary recycles everything pg1 would need.
    ok(&["lab", "psql", "--", "-v", "ON_ERROR_STOP=1", "-c", "INSERT INTO archived SELECT g, 'absent' FROM generate_series(1, 1000) g"]);
    superuser_sql(new, "ALTER SYSTEM SET wal_keep_size = 0");
    superuser_sql(new, "SELECT pg_reload_conf()");
    for round in 0..4 {
        ok(&["lab", "psql", "--", "-v", "ON_ERROR_STOP=1", "-c", &format!("INSERT INTO archived SELECT g, 'recycle {round}' FROM generate_series(1, 1000) g")]);
        superuser_sql(new, "SELECT pg_switch_wal()");
        superuser_sql(new, "CHECKPOINT");
    }
    wait_until(Duration::from_secs(30), &format!("{new} to recycle {needed}"), || {
        superuser_sql(new, "CHECKPOINT");
        !in_pg_wal(new, &needed)
    });
    assert!(archive(&needed), "{needed} must be in the archive");
    let expected = before + 5000;

    // Without the archive the rewind fails: pg_rewind's own crash recovery of pg1 (a shutdown
    // checkpoint after the fork) recycles pg1's copy of the segment too, and pg_wal alone no
    // longer reaches back to the last common checkpoint. (Not --dry-run: that skips the crash
    // recovery and stops at "must be shut down cleanly". pg_rewind fails while it still only
    // reads, before it changes a file.)
    let source = format!("host={new_addr} port=5432 user=postgres dbname=postgres");
    let dry = run(&["lab", "exec", "pg1", "--", "runuser", "-u", "postgres", "--", "env",
                    &format!("PGPASSFILE={STATE_DIR}/pg1/pgpass"), &format!("{PG_BIN}/pg_rewind"),
                    "--target-pgdata", &format!("{STATE_DIR}/pg1/data"), &format!("--source-server={source}")]);
    let dry_err = stderr(&dry);
    eprintln!("pg_rewind without --restore-target-wal:\n{dry_err}");
    assert!(!dry.status.success(), "pg_rewind without the archive should fail here:\n{}{dry_err}", stdout(&dry));
    assert!(dry_err.contains("could not find previous WAL record") || dry_err.contains("could not open file"), "{dry_err}");
    assert!(!in_pg_wal("pg1", &needed), "{needed} should be gone from pg1's own pg_wal too");

    // The rejoin, as the lab's rejoin_command runs it.
    let log_before = std::fs::read_to_string(format!("{STATE_DIR}/pg1/postgres.log")).unwrap_or_default().len();
    let rejoin = run(&["lab", "exec", "pg1", "--", pglb_bin().to_str().unwrap(), "node", "rejoin", "--primary", &new_addr,
                       "--name", "pg1", "--data-dir", &format!("{STATE_DIR}/pg1/data"),
                       "--passfile", &format!("{STATE_DIR}/pg1/pgpass"), "--pg-bin", PG_BIN]);
    let (rejoin_out, rejoin_err) = (stdout(&rejoin), stderr(&rejoin));
    assert!(rejoin.status.success(), "pglb node rejoin failed:\n{rejoin_out}{rejoin_err}");
    assert!(rejoin_err.contains("pg_rewind --restore-target-wal"), "the rejoin must say it used the archive:\n{rejoin_err}");

    wait_until(Duration::from_secs(60), "pg1 to stream from the new primary with every row", || {
        let row = run(&["lab", "exec", "pg1", "--", "runuser", "-u", "postgres", "--", &format!("{PG_BIN}/psql"), "-X",
                        "-h", &format!("{STATE_DIR}/pg1/sock"), "-d", "app", "-At", "-F", "|", "-c",
                        "SELECT pg_is_in_recovery(), (SELECT status || '|' || sender_host FROM pg_stat_wal_receiver), (SELECT count(*) FROM archived)"]);
        stdout(&row).trim() == format!("t|streaming|{new_addr}|{expected}")
    });
    let log = std::fs::read_to_string(format!("{STATE_DIR}/pg1/postgres.log")).unwrap_or_default();
    let restored = log[log_before.min(log.len())..].lines().filter(|l| l.contains("restored log file")).count();
    eprintln!("pg1 restored {restored} files from the archive while starting as a standby");
    assert!(restored >= 1, "pg1 should have restored WAL from the archive at its start:\n{}", &log[log_before.min(log.len())..]);
    assert_eq!(superuser_sql(new, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg1' AND state = 'streaming' AND client_addr = '172.20.0.10'"), "1");
}
