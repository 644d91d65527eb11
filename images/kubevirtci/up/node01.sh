# shellcheck shell=sh
# node01: gocli's node01 steps (kubeadm init and the cluster's base manifests).
kubectl_retry() { until_true 300 kubectl "$@"; }
coredns_patches() {
    for p in /provision/kubeadm-patches/*; do
        [ -f "$p" ] || continue
        kubectl patch deployment coredns -n kube-system --patch-file "$p"
    done
}
prepare_node
step kubeadm-init kubeadm init --config /etc/kubernetes/kubeadm_flannel.conf -v5
step coredns-patch coredns_patches
step flannel kubectl create -f /etc/kubernetes/flannel.yaml
step untaint kubectl taint nodes "$KVCI_NODE" node-role.kubernetes.io/control-plane:NoSchedule-
step get-nodes kubectl_retry get nodes
step local-volume kubectl create -f /provision/local-volume.yaml
mkdir -p /var/lib/rook
if [ -f /etc/kubernetes/knp.yaml ]; then
    step network-policies kubectl create -f /etc/kubernetes/knp.yaml
fi
