#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# kvci's drop-in for kubevirtci's cluster-up/ssh.sh: `ssh.sh node01 [command…]` runs as root on
# the node (a shell without a command).
set -e

if [ -z "$KUBEVIRTCI_PATH" ]; then
    KUBEVIRTCI_PATH="$(
        cd "$(dirname "${BASH_SOURCE[0]}")/" || exit
        echo "$(pwd)/"
    )"
fi

# shellcheck source=hack/common.sh
source "${KUBEVIRTCI_PATH}hack/common.sh"
# shellcheck source=cluster/kvci-provider.sh
source "${KUBEVIRTCI_CLUSTER_PATH}/$KUBEVIRT_PROVIDER/provider.sh"
# shellcheck source=hack/config.sh
source "${KUBEVIRTCI_PATH}hack/config.sh"

node=$1

if [ -z "$node" ]; then
    echo "node name required as argument"
    echo "k8s example: ./ssh node01"
    exit 1
fi

_kvci_gocli ssh "$@"
