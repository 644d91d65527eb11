#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The provider's settings for kubevirt's scripts, as kubevirtci's hack/config.sh loads them.
unset docker_prefix master_ip network_provider kubeconfig manifest_docker_prefix

KUBEVIRT_PROVIDER=${KUBEVIRT_PROVIDER:-${PROVIDER}}

# shellcheck source=config-default.sh
source "${KUBEVIRTCI_PATH}hack/config-default.sh"

# Allow different providers to override default config values
config="${KUBEVIRTCI_CONFIG_PATH}/$KUBEVIRT_PROVIDER/config-provider-${KUBEVIRT_PROVIDER}.sh"
# shellcheck disable=SC1090 # written by up.sh
test -f "$config" && source "$config"

export docker_prefix master_ip network_provider kubeconfig manifest_docker_prefix
