# shellcheck shell=sh
# Shared by kvci's kubevirtci hooks (sourced after the KVCI_* exports): gocli's per-node steps.
export KUBECONFIG=/etc/kubernetes/admin.conf

# step NAME CMD...: runs CMD and prints how long it took.
step() {
    name=$1
    shift
    started=$(date +%s.%N)
    "$@"
    echo "kvci-step $name $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
}

# until_true SECONDS CMD...: retries CMD every half second until it succeeds or time is up.
until_true() {
    limit=$1
    shift
    tries=$((limit * 2))
    until "$@"; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || { echo "gave up after ${limit}s: $*" >&2; return 1; }
        sleep 0.5
    done
}

# KubeVirt's host-device tests use the emulated sound cards through vfio-pci.
bind_sound_cards() {
    modprobe vfio-pci 2>/dev/null || true
    for dev in /sys/bus/pci/devices/*; do
        id="$(cat "$dev/vendor" 2>/dev/null):$(cat "$dev/device" 2>/dev/null)"
        case "$id" in
        0x8086:0x2668 | 0x8086:0x293e)
            echo vfio-pci > "$dev/driver_override"
            [ -e "$dev/driver" ] && echo "${dev##*/}" > "$dev/driver/unbind"
            echo "${dev##*/}" > /sys/bus/pci/drivers_probe || true
            ;;
        esac
    done
}

hostname_is_ours() { [ "$(hostname)" = "$KVCI_NODE" ]; }
has_global_ipv6() { ip -6 addr show dev eth0 scope global | grep -q inet6; }
crio_is_active() { systemctl is-active -q crio; }

# What every node does before Kubernetes: as gocli's node01 and nodes options.
prepare_node() {
    step vfio-sound-cards bind_sound_cards
    step dhcp-hostname until_true 300 hostname_is_ours
    swapoff -a
    if [ "${KVCI_STACK:-dual}" != ipv4 ]; then
        step global-ipv6 until_true 300 has_global_ipv6
    fi
    step crio until_true 300 crio_is_active
}
