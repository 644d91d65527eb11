#!/bin/sh
# node01: kubeadm init with a token derived from the cluster's secret, so joins need no
# round trip; the API certificate also names 127.0.0.1 for the forwarded `k8s` port.
set -eu
token="$(printf '%s' "$KVCI_TOKEN" | cut -c1-6).$(printf '%s' "$KVCI_TOKEN" | cut -c7-22)"
kubeadm init \
    --token "$token" --token-ttl 0 \
    --apiserver-advertise-address "$KVCI_NODE_IP" \
    --apiserver-cert-extra-sans "127.0.0.1,$KVCI_NODE,$KVCI_NODE.$KVCI_CLUSTER" \
    --pod-network-cidr 10.244.0.0/16
export KUBECONFIG=/etc/kubernetes/admin.conf
kubectl apply -f /etc/kubernetes-flannel.yaml
kubectl taint nodes --all node-role.kubernetes.io/control-plane- || true
