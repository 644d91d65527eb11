#!/bin/sh
# Stand-in for the provider's Kubernetes phase (its result is disk02.qcow2). Never run.
exit 0
