#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build kvci, start the default
# one-node cluster of the `tiny` image (built from Debian packages on first use).
# Extra arguments go to `kvci vm up` (e.g. --nodes 3).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --locked
exec ./target/release/kvci vm up "$@"
