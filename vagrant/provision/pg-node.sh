#!/bin/bash
# Step 1 on every PostgreSQL host (docs/DEPLOY.md "PostgreSQL hosts"), as root:
#   bash provision/pg-node.sh NODE_NAME          e.g. pg1
# Installs PostgreSQL 15 from Debian and the pglb package (for `pglb node clone|rejoin`; its
# service stays masked here), drops Debian's default cluster (the configuration must live in
# the data directory), installs the postgresql-pglb unit, the postgres user's passfile, the
# node's per-host settings, and the forced command the load balancers' ssh key may run.
# Needs in $PGLB_SECRETS: postgres.password, replicator.password, demote_ed25519.pub.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=env.sh
. "$here/env.sh"
[ "$(id -u)" -eq 0 ] || die "run as root"
name=${1:?usage: pg-node.sh NODE_NAME}
addr=$(node_addr "$name")

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q postgresql-15 postgresql-client-15 openssh-server
install_pglb_deb
# pglb runs on the load balancers only; here it is the `pglb node` tool.
systemctl mask --now pglb.service

# Debian's cluster keeps postgresql.conf in /etc/postgresql/15/main; pg_ctl -D DATA_DIR (pglb node
# clone/rejoin) and pg_rewind's single-user recovery read it from the data directory.
if pg_lsclusters -h | grep -q '^15 main '; then
    pg_dropcluster --stop 15 main
fi
install -d -o postgres -g postgres -m 0700 "$PG_DIR"

# The passfile: replicator for streaming and pg_basebackup, postgres for pg_rewind against the
# new primary (`pglb node rejoin`).
umask 077
printf '*:*:*:replicator:%s\n*:*:*:postgres:%s\n' "$(secret replicator)" "$(secret postgres)" > "$PG_PASSFILE"
chown postgres:postgres "$PG_PASSFILE"
chmod 0600 "$PG_PASSFILE"
umask 022

# Per-node settings beside the data directory (postgresql.conf includes ../node.conf), so that
# pg_basebackup does not copy one node's values to another.
cat > "$PG_DIR/node.conf" <<CONF
# written by pg-node.sh for $name
listen_addresses = '$addr'
cluster_name = '$name'
CONF
chown postgres:postgres "$PG_DIR/node.conf"

install -m 0644 "$here/postgresql-pglb.service" /etc/systemd/system/postgresql-pglb.service
systemctl daemon-reload
systemctl enable postgresql-pglb.service

# The load balancers' demote/rejoin key: from their addresses only, this one command only.
install -d -m 0755 /etc/pglb
cat > /etc/pglb/node.env <<ENV
PGLB_NODE_NAME=$name
PGLB_NODE_ADDRS="$(node_addrs)"
PGLB_DATA_DIR=$PGDATA_DIR
PGLB_PASSFILE=$PG_PASSFILE
ENV
chmod 0644 /etc/pglb/node.env
install -m 0755 "$here/pglb-ssh-rejoin" /usr/local/sbin/pglb-ssh-rejoin
[ -r "$PGLB_SECRETS/demote_ed25519.pub" ] || die "missing $PGLB_SECRETS/demote_ed25519.pub (run make-secrets.sh)"
from=$(echo "$LB_ADDRS" | tr ' ' ',')
install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/.ssh
printf 'restrict,from="%s",command="/usr/local/sbin/pglb-ssh-rejoin" %s\n' "$from" "$(cat "$PGLB_SECRETS/demote_ed25519.pub")" \
    > /var/lib/postgresql/.ssh/authorized_keys
chown postgres:postgres /var/lib/postgresql/.ssh/authorized_keys
chmod 0600 /var/lib/postgresql/.ssh/authorized_keys

echo "pg-node.sh: $name ($addr) ready; next: pg-primary.sh on the first node, pg-standby.sh on the others"
