#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# kvci's drop-in for kubevirtci's cluster-up/kubectl.sh: node01's kubectl (copied by up.sh)
# with the cluster's kubeconfig.
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

if [ "$1" == "console" ] || [ "$1" == "vnc" ] || [ "$1" == "start" ] || [ "$1" == "stop" ] || [ "$1" == "migrate" ] || [ "$1" == "virt" ]; then
    echo "ERROR: usage of $0 $1 has been disabled - consider using https://github.com/kubevirt/kubectl-virt-plugin/#kubectl-virt-plugin"
    exit 1
else
    _kubectl "$@"
fi
