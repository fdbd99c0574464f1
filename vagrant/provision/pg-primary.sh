#!/bin/bash
# Step 2 on the initial primary only (the first node of PG_NODES), as root, after pg-node.sh:
#   bash provision/pg-primary.sh
# initdb with the configuration in the data directory, pg_hba.conf, start, then the roles the
# cluster needs (replicator, app, and pglb with exactly the lab's least-privilege grants) and
# the app database. The standbys' slots are created by `pglb node clone` (pg-standby.sh).
# Needs in $PGLB_SECRETS: postgres, replicator, app and pglb .password.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=env.sh
. "$here/env.sh"
[ "$(id -u)" -eq 0 ] || die "run as root"
names=$(node_names)
read -r -a lbs <<< "$LB_ADDRS"

if [ ! -e "$PGDATA_DIR/PG_VERSION" ]; then
    pwfile=$(mktemp)
    secret postgres > "$pwfile"
    chown postgres "$pwfile"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=peer \
        --auth-host=scram-sha-256 --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8
    rm -f "$pwfile"

    cat >> "$PGDATA_DIR/postgresql.conf" <<CONF

# --- pglb cluster (provision/pg-primary.sh), copied to the standbys by pg_basebackup ---
port = 5432
wal_level = replica
hot_standby = on
hot_standby_feedback = on
max_wal_senders = 10
max_replication_slots = 10
# pg_rewind (pglb node rejoin) needs it
wal_log_hints = on
synchronous_commit = on
synchronous_standby_names = 'ANY 1 ($(echo "$names" | sed 's/ *$//; s/ /, /g'))'
recovery_target_timeline = 'latest'
wal_receiver_status_interval = 1s
# pg_rewind reads the old primary's WAL back to the last checkpoint before the fork: keep it
# generous, or archive WAL with archive_command/restore_command.
wal_keep_size = 1GB
# a hung primary stops looking like a live upstream within a second (pglb's failover waits for
# the standbys to give it up)
wal_sender_timeout = 1s
wal_receiver_timeout = 1s
password_encryption = scram-sha-256
log_line_prefix = '%m [%p] %q%u@%d '
# per-node settings (listen_addresses, cluster_name), not copied by pg_basebackup
include_if_exists = '../node.conf'
CONF

    {
        echo "# pglb cluster (provision/pg-primary.sh); the same file on every node"
        echo "local   all          postgres                       peer"
        echo "local   all          all                            scram-sha-256"
        echo "# streaming replication and pg_basebackup between the PostgreSQL hosts"
        for a in $(node_addrs); do echo "host    replication  replicator  $a/32    scram-sha-256"; done
        echo "# pglb node rejoin: pg_rewind and CHECKPOINT as postgres against the new primary"
        for a in $(node_addrs); do echo "host    postgres     postgres    $a/32    scram-sha-256"; done
        echo "# pglb's probes and actions, from the load balancers' own addresses"
        for a in "${lbs[@]}"; do echo "host    postgres     pglb        $a/32    scram-sha-256"; done
        echo "# clients through the VIP: pglb's full NAT makes the VIP their source address"
        echo "host    app          app         $VIP/32   scram-sha-256"
    } > "$PGDATA_DIR/pg_hba.conf"
    chown postgres:postgres "$PGDATA_DIR/postgresql.conf" "$PGDATA_DIR/pg_hba.conf"
fi

systemctl start postgresql-pglb.service

# No standby exists yet: these commits must not wait for one (synchronous_commit=local).
PGOPTIONS='-c synchronous_commit=local' runuser -u postgres -- "$PG_BIN/psql" -X -q -d postgres \
    -v ON_ERROR_STOP=1 -v repl_pw="$(secret replicator)" -v app_pw="$(secret app)" -v pglb_pw="$(secret pglb)" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pglb') AS fresh \gset
\if :fresh
CREATE ROLE replicator WITH LOGIN REPLICATION PASSWORD :'repl_pw';
CREATE ROLE app WITH LOGIN PASSWORD :'app_pw';
CREATE ROLE pglb WITH LOGIN REPLICATION PASSWORD :'pglb_pw';
GRANT pg_monitor TO pglb;
GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO pglb;
GRANT EXECUTE ON FUNCTION pg_reload_conf() TO pglb;
GRANT ALTER SYSTEM ON PARAMETER primary_conninfo, primary_slot_name, synchronous_standby_names TO pglb;
CREATE DATABASE app OWNER app;
\endif
SQL
echo "pg-primary.sh: primary ready; next: pg-standby.sh on the other nodes"
