#!/bin/bash
# Makes the cluster's secrets in DIR (default ./secrets), once: passwords of the roles postgres,
# replicator, app and pglb, the /stats password, the key the load balancers authenticate their
# peer reports with ([vrrp] key_file), and the ssh key pair the load balancers use for
# demote_command and rejoin_command. Run it on an admin machine; copy to each host only what it
# needs (docs/DEPLOY.md "Secrets"). Existing files are kept.
set -euo pipefail
dir=${1:-secrets}
umask 077
mkdir -p "$dir"
for name in postgres replicator app pglb stats; do
    file=$dir/$name.password
    if [ ! -s "$file" ]; then
        # 18 random bytes as hex: no character that needs quoting in SQL, conninfo or pgpass.
        od -An -tx1 -N18 /dev/urandom | tr -d ' \n' > "$file"
        echo >> "$file"
        echo "made $file"
    fi
done
if [ ! -s "$dir/peer.key" ]; then
    # 32 random bytes as hex (>= 16 bytes, as pglb requires); the same file on every load balancer.
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$dir/peer.key"
    echo >> "$dir/peer.key"
    echo "made $dir/peer.key"
fi
if [ ! -s "$dir/demote_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N '' -C pglb-demote -f "$dir/demote_ed25519"
    echo "made $dir/demote_ed25519 and .pub"
fi
