#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# kvci's drop-in for kubevirtci's cluster-up/check.sh: /dev/kvm, nested virtualisation, and
# the accelerator kvci would pick (KVM only where it really runs guests). Exits non-zero when
# KUBEVIRT_NESTED_VIRTUALIZATION_REQUIRED=true and nested virtualisation is off.
set -e

if [ -z "$KUBEVIRTCI_PATH" ]; then
    KUBEVIRTCI_PATH="$(
        cd "$(dirname "${BASH_SOURCE[0]}")/" || exit
        echo "$(pwd)/"
    )"
fi

# shellcheck source=hack/common.sh
source "${KUBEVIRTCI_PATH}hack/common.sh"

"${KVCI_BIN}" kubevirtci check
