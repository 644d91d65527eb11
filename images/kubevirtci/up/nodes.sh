# shellcheck shell=sh
# Other nodes: gocli's nodes steps (the kubelet's arguments, then kubeadm join to node01).
kubelet_args() {
    mkdir -p /etc/sysconfig
    echo 'KUBELET_EXTRA_ARGS=--cgroup-driver=systemd --runtime-cgroups=/systemd/system.slice --kubelet-cgroups=/systemd/system.slice --fail-swap-on=false --feature-gates=NodeSwap=true --cpu-manager-policy=static --kube-reserved=cpu=500m --system-reserved=cpu=500m' > /etc/sysconfig/kubelet
    systemctl restart kubelet
}
step kubelet-args kubelet_args
prepare_node
api="${KVCI_NODE_IPS%% *}"
case "$api" in *:*) api="[$api]" ;; esac
step kubeadm-join kubeadm join --token abcdef.1234567890123456 "$api:6443" \
    --ignore-preflight-errors=all --discovery-token-unsafe-skip-ca-verification=true
