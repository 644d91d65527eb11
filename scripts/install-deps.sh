#!/usr/bin/env bash
# Installs what kvci needs on Debian 12 (root): QEMU 10 from bookworm-backports (Debian 12's own
# 7.2 conflicts with the preinstalled qemu-utils 10 and cannot migrate to a file), plus the tools
# the `tiny` image build uses. Idempotent: does nothing when everything is there.
set -euo pipefail

need=()
qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null &&
        qemu-system-x86_64 --version | awk 'NR==1 { split($4, v, "."); exit !(v[1] >= 9) }'
}
qemu_ok || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v dpkg-deb >/dev/null || need+=(dpkg)
# Tests check that `kvci vm ssh-config` works with plain OpenSSH; ip(8) to inspect links.
command -v ssh >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
command -v shellcheck >/dev/null || need+=(shellcheck)
# kvci-net's IPv6 test runs Debian's own clients against its DHCPv6 server and advertisements.
command -v dhclient >/dev/null || need+=(isc-dhcp-client)
command -v rdisc6 >/dev/null || need+=(ndisc6)
command -v debootstrap >/dev/null || need+=(debootstrap)
# Egress: slirp4netns attached to each cluster's namespace, nft for NAT inside it.
command -v slirp4netns >/dev/null || need+=(slirp4netns)
command -v nft >/dev/null || need+=(nftables)
# Tests push to the cluster registry and read kvci's OCI exports with skopeo.
command -v skopeo >/dev/null || need+=(skopeo)
# ping in the benchmarks.
command -v ping >/dev/null || need+=(iputils-ping)
# The kubevirtci stand-in's kubectl, copied to the host by cluster-up, talks HTTP with curl.
command -v curl >/dev/null || need+=(curl)

# apt-get download (image builds) needs package lists; fresh machines may have none.
lists_missing() { ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; }

if [ ${#need[@]} -eq 0 ] && ! lists_missing; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "kvci: missing ${need[*]:-apt package lists}; run this script as root (sudo $0)" >&2
    exit 1
fi

# bookworm-backports from the mirror apt already uses (no other host is contacted).
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" > /etc/apt/sources.list.d/kvci-backports.sources
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
    echo "kvci: installing ${need[*]}" >&2
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need[@]}" >/dev/null
fi
qemu_ok || { echo "kvci: QEMU >= 9 is still missing after install" >&2; exit 1; }
