#!/bin/sh
# Other nodes: join node01 with the token init.sh derived from the same secret.
set -eu
token="$(printf '%s' "$KVCI_TOKEN" | cut -c1-6).$(printf '%s' "$KVCI_TOKEN" | cut -c7-22)"
kubeadm join "$KVCI_FIRST_NODE:6443" --token "$token" --discovery-token-unsafe-skip-ca-verification
