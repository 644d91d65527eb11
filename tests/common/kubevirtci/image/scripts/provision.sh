#!/bin/sh
# Stand-in for the provider's linux phase (kubevirtci runs it inside the node while building the
# image; its result is disk01.qcow2). Kept for the layout; never run.
exit 0
