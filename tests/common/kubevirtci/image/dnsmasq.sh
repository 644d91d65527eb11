#!/bin/sh
# Stand-in for kubevirtci's dnsmasq.sh (bridge, taps, DHCP for the nodes inside the provider
# container). kvci serves the cluster network itself and never runs this.
echo "dnsmasq.sh: kvci's stand-in of a kubevirtci provider image; nothing to run" >&2
exit 1
