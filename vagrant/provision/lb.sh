#!/bin/bash
# On each load balancer, as root, once the PostgreSQL cluster runs:
#   bash provision/lb.sh LB_NAME LB_ADDRESS PRIORITY      e.g. lb1 172.20.0.21 150, lb2 172.20.0.22 100
# Installs the pglb package, its secrets and the demote/rejoin ssh key, writes
# /etc/pglb/pglb.toml from pglb.toml.in, checks it (`pglb check`) and starts pglb.service.
# Needs in $PGLB_SECRETS: pglb, replicator and stats .password, peer.key, demote_ed25519 (private key).
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=env.sh
. "$here/env.sh"
[ "$(id -u)" -eq 0 ] || die "run as root"
name=${1:?usage: lb.sh LB_NAME LB_ADDRESS PRIORITY}
address=${2:?usage: lb.sh LB_NAME LB_ADDRESS PRIORITY}
priority=${3:?usage: lb.sh LB_NAME LB_ADDRESS PRIORITY}
case " $LB_ADDRS " in *" $address "*) ;; *) die "$address is not in LB_ADDRS ($LB_ADDRS)" ;; esac
# The interface that holds this address: XDP attaches there and the VIP is added there.
interface=${LB_INTERFACE:-$(ip -o -4 addr show | awk -v a="$address" 'index($4, a "/") == 1 { print $2; exit }')}
[ -n "$interface" ] || die "no interface holds $address (set LB_INTERFACE)"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q openssh-client postgresql-client-15
install_pglb_deb

# Secrets, readable by root only (pglb.service runs as root; `systemctl show -p User pglb`).
install -d -m 0755 /etc/pglb
for s in pglb replicator stats; do
    secret "$s" > "/etc/pglb/$s.password"
    chmod 0600 "/etc/pglb/$s.password"
done
# The key the load balancers authenticate their peer reports with ([vrrp] key_file): the same on each.
install -m 0600 "$PGLB_SECRETS/peer.key" /etc/pglb/peer.key
install -d -m 0700 /etc/pglb/ssh
install -m 0600 "$PGLB_SECRETS/demote_ed25519" /etc/pglb/ssh/id_ed25519
# The PostgreSQL hosts' host keys. ssh-keyscan trusts the network once: compare the printed
# fingerprints with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on each host.
: > /etc/pglb/ssh/known_hosts
for a in $(node_addrs); do
    ssh-keyscan -T 10 -t ed25519 "$a" >> /etc/pglb/ssh/known_hosts 2>/dev/null || die "ssh-keyscan $a failed"
done
chmod 0644 /etc/pglb/ssh/known_hosts
ssh-keygen -l -f /etc/pglb/ssh/known_hosts

nodes=""
for n in $PG_NODES; do
    nodes+=$(printf '[[node]]\nname = "%s"\nhost = "%s"\n\n' "${n%%:*}" "${n#*:}")$'\n\n'
done
nodes=${nodes%$'\n'}
peers=""
for a in $LB_ADDRS; do
    [ "$a" = "$address" ] || peers+="${peers:+, }\"$a\""
done
shopt -u patsub_replacement 2>/dev/null || true  # bash 5.2: no & in replacements
conf=$(cat "$here/pglb.toml.in")
for kv in "NAME=$name" "INTERFACE=$interface" "ADDRESS=$address" "PREFIX_LEN=$PREFIX_LEN" "VIP=$VIP" \
          "XDP_MODE=$XDP_MODE" "VRID=$VRID" "PRIORITY=$priority" "PEERS=$peers" "NODES=$nodes"; do
    conf=${conf//@${kv%%=*}@/${kv#*=}}
done
printf '%s\n' "$conf" > /etc/pglb/pglb.toml.new
chmod 0644 /etc/pglb/pglb.toml.new
pglb check --config /etc/pglb/pglb.toml.new
mv /etc/pglb/pglb.toml.new /etc/pglb/pglb.toml

systemctl enable pglb.service
systemctl restart pglb.service
sleep 3
pglb status --config /etc/pglb/pglb.toml || true
echo "lb.sh: $name ($address, priority $priority) runs pglb on $interface"
