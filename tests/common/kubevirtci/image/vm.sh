#!/bin/sh
# Stand-in for kubevirtci's vm.sh, which starts the node's QEMU inside the provider container.
# kvci boots the disks itself and never runs this.
echo "vm.sh: kvci's stand-in of a kubevirtci provider image; nothing to run" >&2
exit 1
