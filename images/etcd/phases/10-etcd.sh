#!/bin/sh
# Install etcd from the packages kvci copied in; the cluster is formed at `vm up`, so the
# package's own single-member instance is stopped and its data dropped.
set -eu
export DEBIAN_FRONTEND=noninteractive
dpkg -i /var/cache/kvci/debs/*.deb
rm -rf /var/cache/kvci/debs
systemctl disable --now etcd
rm -rf /var/lib/etcd/default
etcd --version
etcdctl version
