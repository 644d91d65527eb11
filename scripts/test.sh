#!/usr/bin/env bash
# The whole test suite: unit tests, bounded fuzzing of guest-facing parsers, and integration
# tests that boot real guests under QEMU (TCG on hosts without usable KVM).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo test --locked --workspace
