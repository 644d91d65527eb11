#!/bin/sh
# Starts this node's etcd member of a static cluster of every node (KVCI_* come from kvci).
set -eu
members=""
for n in $KVCI_NODES; do
    members="${members:+$members,}$n=http://$n:2380"
done
start-stop-daemon -S -b -m -p /run/etcd.pid -x /bin/sh -- -c "exec /usr/bin/etcd \
    --name $KVCI_NODE --data-dir /var/lib/etcd \
    --listen-peer-urls http://0.0.0.0:2380 --listen-client-urls http://0.0.0.0:2379 \
    --initial-advertise-peer-urls http://$KVCI_NODE:2380 --advertise-client-urls http://$KVCI_NODE:2379 \
    --initial-cluster $members --initial-cluster-token $KVCI_TOKEN --initial-cluster-state new \
    > /var/log/etcd.log 2>&1"
# Ready when this member serves reads through the cluster (needs a quorum).
tries=0
until etcdctl --endpoints http://127.0.0.1:2379 --command-timeout=2s endpoint health >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then
        echo "etcd on $KVCI_NODE did not become healthy:" >&2
        tail -n 20 /var/log/etcd.log >&2
        exit 1
    fi
    sleep 1
done
echo "etcd member $KVCI_NODE healthy"
