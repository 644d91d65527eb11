# shellcheck shell=sh
# node01, once every node joined: worker labels (node01 itself in a one-node cluster).
label_workers() {
    for n in $KVCI_NODES; do
        if [ "$n" != "$KVCI_FIRST_NODE" ] || [ "$KVCI_NODES" = "$KVCI_FIRST_NODE" ]; then
            kubectl label node "$n" node-role.kubernetes.io/worker='' --overwrite
        fi
    done
}
step worker-labels label_workers
