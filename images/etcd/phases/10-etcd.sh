#!/bin/sh
# Unpack etcd (packages were copied in by kvci; the tiny base has no apt).
set -eu
for deb in /var/cache/kvci/debs/*.deb; do
    dpkg-deb -x "$deb" /
done
rm -rf /var/cache/kvci/debs /usr/share/doc /usr/share/man
mkdir -p /var/lib/etcd
etcd --version
etcdctl version
