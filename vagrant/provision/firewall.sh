#!/bin/bash
# Optional, on every host, as root:   bash provision/firewall.sh pg|lb
# Writes /etc/nftables.conf with an input filter for the host's role and loads it. What it lets
# in (docs/DEPLOY.md "Firewall"):
#   PostgreSQL hosts: 5432 from the load balancers (probes), the VIP (client connections after
#     pglb's full NAT) and the other PostgreSQL hosts (replication, pg_rewind); ssh from the load
#     balancers (demote/rejoin) and ADMIN_NETS.
#   Load balancers: VRRP (IP protocol 112) and the peer reports (UDP 3002) from the other load
#     balancer, 8404 from SCRAPE_NETS, ssh from ADMIN_NETS, replies from PostgreSQL.
# The VIP's ports 3000/3001 are absent on purpose: the XDP program forwards those packets (and
# the backends' replies) before netfilter sees them; a rule here cannot filter them.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=env.sh
. "$here/env.sh"
[ "$(id -u)" -eq 0 ] || die "run as root"
role=${1:?usage: firewall.sh pg|lb}
set_of() { echo "$*" | sed 's/^ *//; s/ *$//; s/  */, /g'; }
pg=$(set_of "$(node_addrs)")
lbs=$(set_of "$LB_ADDRS")
admin=$(set_of "$ADMIN_NETS")
scrape=$(set_of "$SCRAPE_NETS")

case "$role" in
pg) rules="        tcp dport 5432 ip saddr { $lbs, $VIP, $pg } accept
        tcp dport 22 ip saddr { $lbs } accept
        tcp dport 22 ip saddr { $admin } accept" ;;
lb) rules="        ip protocol 112 ip saddr { $lbs } accept
        udp dport 3002 ip saddr { $lbs } accept
        tcp dport 8404 ip saddr { $scrape } accept
        tcp dport 22 ip saddr { $admin } accept
        # a backend's SYN+ACK for a half-open flow a flood pushed out is passed to the kernel,
        # which must answer with RST (pass_half_open_reclaimed)
        tcp sport 5432 ip saddr { $pg } accept" ;;
*) die "usage: firewall.sh pg|lb" ;;
esac

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q nftables
cat > /etc/nftables.conf <<NFT
#!/usr/sbin/nft -f
# written by provision/firewall.sh $role
flush ruleset
table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iif lo accept
        ip protocol icmp accept
        meta l4proto ipv6-icmp accept
$rules
    }
}
NFT
nft -c -f /etc/nftables.conf
systemctl enable nftables.service
systemctl restart nftables.service
echo "firewall.sh: $role rules loaded"
