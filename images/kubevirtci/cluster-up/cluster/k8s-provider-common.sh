#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# kubevirtci's name for the k8s providers' common functions: kvci's.
# shellcheck source=kvci-provider.sh
source "${KUBEVIRTCI_PATH}/cluster/kvci-provider.sh"
