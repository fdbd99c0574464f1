# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for the scripts that source this file
# The cluster's address plan and paths, sourced by every script in this folder. The values are
# the classic stack's plan (docs/DEPLOY.md); edit them for other hosts. Anything set in the
# environment before a script runs wins over the defaults below.

# PostgreSQL nodes as name:address. The name is application_name and the physical slot name
# (1-63 of a-z, 0-9, _); the first one is the initial primary.
: "${PG_NODES:=pg1:172.20.0.10 pg2:172.20.0.11 pg3:172.20.0.12}"
# The two load balancers' own addresses, and the VIP they share (with the subnet's prefix).
: "${LB_ADDRS:=172.20.0.21 172.20.0.22}"
: "${VIP:=172.20.0.100}"
: "${PREFIX_LEN:=16}"
# VRRP virtual router id: the same on both load balancers (and on keepalived during a move).
: "${VRID:=51}"
# [dataplane] xdp_mode: "native" (in the NIC driver) or "generic" (any driver, slower).
: "${XDP_MODE:=native}"
# Where the secrets made by make-secrets.sh are (only the files a host needs must be there).
: "${PGLB_SECRETS:=/vagrant/secrets}"
# The pglb package built by `cargo xtask package`; empty: the newest /vagrant/pglb_*.deb.
: "${PGLB_DEB:=}"
# Addresses allowed to ssh in besides the load balancers (firewall.sh), e.g. "10.0.0.0/8".
: "${ADMIN_NETS:=0.0.0.0/0}"
# Addresses allowed to scrape :8404 (firewall.sh on the load balancers).
: "${SCRAPE_NETS:=172.20.0.0/16}"

# Fixed by this layout (docs/DEPLOY.md "PostgreSQL layout"): the configuration lives in the data
# directory, as `pglb node clone|rejoin` (pg_ctl -D, pg_rewind) need it.
PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR=/var/lib/postgresql/15
PGDATA_DIR=$PG_DIR/main
PG_PASSFILE=/var/lib/postgresql/.pgpass

# Helpers.
die() { echo "$(basename "$0"): $*" >&2; exit 1; }
secret() { # secret NAME: the contents of $PGLB_SECRETS/NAME.password
    [ -r "$PGLB_SECRETS/$1.password" ] || die "missing $PGLB_SECRETS/$1.password (run make-secrets.sh)"
    tr -d '\n' < "$PGLB_SECRETS/$1.password"
}
node_names() { local n; for n in $PG_NODES; do printf '%s ' "${n%%:*}"; done; }
node_addrs() { local n; for n in $PG_NODES; do printf '%s ' "${n#*:}"; done; }
node_addr() { # node_addr NAME
    local n; for n in $PG_NODES; do [ "${n%%:*}" = "$1" ] && { echo "${n#*:}"; return; }; done
    die "unknown node $1 (PG_NODES: $PG_NODES)"
}
install_pglb_deb() {
    local deb=$PGLB_DEB
    if [ -z "$deb" ]; then
        # shellcheck disable=SC2012 # file names from cargo xtask package: no odd characters
        deb=$(ls -t /vagrant/pglb_*.deb 2>/dev/null | head -n 1)
    fi
    if [ -z "$deb" ] || [ ! -r "$deb" ]; then die "no pglb package: build it with \`cargo xtask package\` and set PGLB_DEB (or copy it to /vagrant/)"; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$(readlink -f "$deb")"
}
