#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Defaults a provider's config-provider-<provider>.sh overrides (as kubevirtci's).
# shellcheck disable=SC2034 # read by the scripts that source this one
docker_prefix=${DOCKER_PREFIX:-kubevirt}
# shellcheck disable=SC2034
master_ip=192.168.200.2
# shellcheck disable=SC2034
network_provider=flannel
