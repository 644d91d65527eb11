#!/bin/sh
# Starts this node's member of a static etcd cluster of every node (KVCI_* come from kvci).
set -eu
members=""
for n in $KVCI_NODES; do
    members="${members:+$members,}$n=http://$n:2380"
done
cat > /etc/default/etcd <<CONF
ETCD_NAME=$KVCI_NODE
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_PEER_URLS=http://0.0.0.0:2380
ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$KVCI_NODE:2380
ETCD_ADVERTISE_CLIENT_URLS=http://$KVCI_NODE:2379
ETCD_INITIAL_CLUSTER=$members
ETCD_INITIAL_CLUSTER_TOKEN=$KVCI_TOKEN
ETCD_INITIAL_CLUSTER_STATE=new
CONF
systemctl enable etcd
# Do not block: the unit is ready only once a quorum of members runs.
systemctl start --no-block etcd
tries=0
until etcdctl --endpoints http://127.0.0.1:2379 --command-timeout=2s endpoint health >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then
        echo "etcd on $KVCI_NODE did not become healthy:" >&2
        journalctl -u etcd --no-pager | tail -n 20 >&2
        exit 1
    fi
    sleep 1
done
echo "etcd member $KVCI_NODE healthy"
