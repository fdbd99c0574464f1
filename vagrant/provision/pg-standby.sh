#!/bin/bash
# Step 2 on every other PostgreSQL host, as root, after pg-node.sh and once the primary runs:
#   bash provision/pg-standby.sh NODE_NAME [PRIMARY_NAME]      e.g. pg2 (primary: the first node)
# `pglb node clone` as postgres: pg_basebackup through a new physical slot NODE_NAME on the
# primary, standby.signal, primary_conninfo with application_name=NODE_NAME, start.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=env.sh
. "$here/env.sh"
[ "$(id -u)" -eq 0 ] || die "run as root"
name=${1:?usage: pg-standby.sh NODE_NAME [PRIMARY_NAME]}
read -r -a names <<< "$(node_names)"
primary=$(node_addr "${2:-${names[0]}}")
[ "$primary" != "$(node_addr "$name")" ] || die "$name is the primary"

for _ in $(seq 120); do
    "$PG_BIN/pg_isready" -q -h "$primary" -p 5432 && break
    sleep 1
done
"$PG_BIN/pg_isready" -h "$primary" -p 5432 || die "the primary $primary does not answer"

if [ ! -e "$PGDATA_DIR/PG_VERSION" ]; then
    # As postgres, so that the files it makes (and its lock beside the data directory) belong to
    # the user the ssh forced command runs `pglb node rejoin` as.
    runuser -u postgres -- /usr/bin/pglb node clone --from "$primary" --name "$name" \
        --data-dir "$PGDATA_DIR" --passfile "$PG_PASSFILE"
fi
# The clone started the server; this marks the unit active (it starts nothing that runs).
systemctl start postgresql-pglb.service
echo "pg-standby.sh: $name streams from $primary"
