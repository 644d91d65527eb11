#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# kvci's drop-in for kubevirtci's cluster-up/cli.sh: gocli's verbs (ports, ssh, scp, rm, run)
# answered by kvci, plus `freeze`. `cli.sh ports registry` prints the registry's host port.
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

_kvci_gocli "$@"
