#!/usr/bin/env bash
# Soak test (not part of ./scripts/test.sh): N cycles of `vm up` / `vm ssh` / `vm status` /
# `vm down` of a one-node `tiny` cluster, checking after every cycle that nothing is left (QEMU,
# egress helpers, network namespaces held by kvci, host links, files under the cluster
# directory) and recording the supervisor's RSS and open fds; a summary at the end.
#
#   ./scripts/soak.sh 100          # uses target/release/kvci if built, else target/debug/kvci
#   KVCI=/path/to/kvci KVCI_DATA_DIR=/tmp/soak ./scripts/soak.sh 20
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: $0 CYCLES}
kvci=${KVCI:-}
if [ -z "$kvci" ]; then
    for k in target/release/kvci target/debug/kvci; do
        if [ -x "$k" ]; then kvci=$k; break; fi
    done
fi
[ -n "$kvci" ] || { echo "soak: build kvci first (cargo build)" >&2; exit 1; }
name=soak
data=${KVCI_DATA_DIR:-$(mktemp -d /tmp/kvci-soak.XXXXXX)}
export KVCI_DATA_DIR=$data
log=$(mktemp /tmp/kvci-soak-log.XXXXXX)
echo "soak: $n cycles of $kvci with data dir $data (log $log)"

# Processes of this soak's cluster: its QEMU, its supervisor, its egress helper.
procs() { pgrep -f -- "kvci-$name-node|supervise --name $name" || true; }
# kvci makes no link in the host (taps and bridges live in each cluster's namespace): any new
# one is a leak. The integration tests' outside-world fixture makes kvo*/kvb* veths: run the
# soak alone, or those are ignored here.
links() { ip -o link show | awk -F': ' '{ print $2 }' | grep -E '^(kv|tap)' | grep -vE '^kv[ob][0-9]' || true; }
links_before=$(links | sort)
files_before=$(find "$data" -path "$data/images" -prune -o -print 2>/dev/null | wc -l)

"$kvci" vm down --name "$name" >/dev/null 2>&1 || true
rss_first="" fds_first=""
start=$(date +%s)
for i in $(seq 1 "$n"); do
    t0=$(date +%s.%N)
    "$kvci" vm up --name "$name" --accel tcg >>"$log" 2>&1
    t1=$(date +%s.%N)
    for _ in 1 2 3 4 5; do
        out=$("$kvci" vm ssh --name "$name" node01 -- echo ok 2>>"$log")
        [ "$out" = ok ] || { echo "soak: cycle $i: ssh answered '$out'" >&2; exit 1; }
    done
    status=$("$kvci" vm status --name "$name" --output json)
    sup=$(pgrep -f -- "supervise --name $name" | head -1)
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$sup/status")
    fds=$(find "/proc/$sup/fd" -mindepth 1 -maxdepth 1 | wc -l)
    qemu=$(echo "$status" | awk -F'"pid": ' '/"pid"/ { gsub(/[^0-9].*/, "", $2); print $2; exit }')
    "$kvci" vm down --name "$name" >>"$log" 2>&1
    t2=$(date +%s.%N)
    # Nothing of the cluster may be left.
    left=$(procs)
    [ -z "$left" ] || { echo "soak: cycle $i: processes left: $left" >&2; exit 1; }
    [ ! -e "/proc/$qemu" ] || { echo "soak: cycle $i: QEMU $qemu still runs" >&2; exit 1; }
    [ ! -e "$data/clusters/$name" ] || { echo "soak: cycle $i: cluster directory left" >&2; exit 1; }
    [ "$(links | sort)" = "$links_before" ] || { echo "soak: cycle $i: host links changed: $(links)" >&2; exit 1; }
    [ -z "$rss_first" ] && rss_first=$rss && fds_first=$fds
    awk -v i="$i" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v rss="$rss" -v fds="$fds" \
        'BEGIN { printf "%d up=%.1fs down=%.1fs supervisor_rss=%dKiB supervisor_fds=%d\n", i, t1 - t0, t2 - t1, rss, fds }' | tee -a "$log.cycles"
done
files_after=$(find "$data" -path "$data/images" -prune -o -print 2>/dev/null | wc -l)
echo
echo "soak: $n cycles in $(( $(date +%s) - start ))s; nothing left after any cycle"
echo "soak: supervisor RSS first $rss_first KiB, max $(awk '{ split($4, a, "="); print a[2] + 0 }' "$log.cycles" | sort -n | tail -1) KiB; fds first $fds_first, max $(awk '{ split($5, a, "="); print a[2] }' "$log.cycles" | sort -n | tail -1)"
echo "soak: files under the data dir (outside images/) before $files_before, after $files_after"
echo "soak: up took $(awk '{ split($2, a, "="); s += a[2] } END { printf "%.1f", s / NR }' "$log.cycles")s on average"
