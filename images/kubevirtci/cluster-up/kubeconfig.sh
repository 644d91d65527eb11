#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# kvci's drop-in for kubevirtci's cluster-up/kubeconfig.sh: prints the kubeconfig's path.
set -e

if [ -z "$KUBEVIRTCI_PATH" ]; then
    KUBEVIRTCI_PATH="$(
        cd "$(dirname "${BASH_SOURCE[0]}")/" || exit
        echo "$(pwd)/"
    )"
fi

# shellcheck source=hack/common.sh
source "${KUBEVIRTCI_PATH}hack/common.sh"

echo "${KUBEVIRTCI_CONFIG_PATH}/$KUBEVIRT_PROVIDER/.kubeconfig"
