#!/bin/sh
# Shared by kvci's stand-ins for kubeadm, kubectl, kubelet and chcon.

# shellcheck disable=SC2034 # used by the scripts that source this file
STANDIN_VERSION=v1.34.10
# shellcheck disable=SC2034
STANDIN_STATE=/var/lib/standin

# Appends one line to /var/log/standin-calls.log: UTC time, user, the command and its arguments
# (newlines inside an argument folded to spaces, so one call is one line).
record() {
    line=$(printf '%s' "$*" | tr '\n' ' ')
    printf '%s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(id -un)" "$line" >>/var/log/standin-calls.log 2>/dev/null || true
}

# Writes a kubeconfig for USER talking to https://SERVER (host:port) to FILE, mode 0600, with
# made-up certificate data.
write_kubeconfig() {
    umask 077
    sed -e "s|@SERVER@|$2|g" -e "s|@USER@|$3|g" /usr/lib/standin/kubeconfig.in >"$1"
}

# The node's IPv4 address on eth0, which kubeadm advertises (192.168.66.1NN in a cluster).
node_address() {
    addr=$(ip -4 -o addr show dev eth0 scope global 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }')
    echo "${addr:-192.168.66.101}"
}
