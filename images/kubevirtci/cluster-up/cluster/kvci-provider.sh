#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The functions kubevirtci's k8s-provider-common.sh gives the scripts, done by kvci:
# up, down, _kubectl, _port, _main_ip, prepare_config, and _cli (gocli's verbs).
set -e

_cli="${KVCI_BIN} kubevirtci gocli"

# shellcheck disable=SC2154 # provider_prefix comes from hack/common.sh
function _kvci_gocli() {
    "${KVCI_BIN}" kubevirtci gocli --prefix "${provider_prefix}" "$@"
}

function _main_ip() {
    echo 127.0.0.1
}

function _port() {
    _kvci_gocli ports "$@"
}

function _kubectl() {
    export KUBECONFIG=${KUBEVIRTCI_CONFIG_PATH}/$KUBEVIRT_PROVIDER/.kubeconfig
    "${KUBEVIRTCI_CONFIG_PATH}/$KUBEVIRT_PROVIDER/.kubectl" "$@"
}

function prepare_config() {
    "${KVCI_BIN}" kubevirtci up --config-only
}

function up() {
    "${KVCI_BIN}" kubevirtci up
}

function down() {
    _kvci_gocli rm
}
