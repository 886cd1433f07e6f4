#!/usr/bin/env bash
# End-to-end replay speed (docs/performance.md, "End to end: replay against a plain C TLB loop"):
# whole `thpsim workload` commands as a user runs them (release build, default machine and cache
# model, which is `sampled`, metadata mode, --enabled never), the same with the exact
# `--cache-model full`, and beside them, in the same invocation, tlbref.c: a plain C loop over the
# same kind of addresses through a two-level TLB and a four-level radix walk.
# thpsim's rate is the measured phase's marginal rate: two runs that differ only in --accesses,
# (A2 − A1) / (T2 − T1), so set-up (mapping and first touch) cancels out. A real program's trace
# (recorded here with QEMU when qemu-x86_64 is present) is replayed whole.
# ROUNDS=N (default 3) sets how many paired rounds each workload gets.
# Run from the repository root after `swift build -c release`: bash Benchmarks/EndToEnd/run.sh
# (THPSIM=path picks another binary.)
set -euo pipefail
ROUNDS=${ROUNDS:-3}
case "$ROUNDS" in ''|*[!0-9]*|0) echo "ROUNDS must be a positive whole number, not '$ROUNDS'" >&2; exit 2;; esac
THPSIM=${THPSIM:-$PWD/.build/release/thpsim}
[ -x "$THPSIM" ] || { echo "build first: swift build -c release" >&2; exit 1; }
WORK=$(mktemp -d /tmp/thpsim-e2e-XXXX)
trap 'rm -rf "$WORK"' EXIT
cc -O2 -Wall -o "$WORK/tlbref" "$(dirname "$0")/tlbref.c"

wall() { /usr/bin/time -o "$WORK/t" -f %e "$@" >/dev/null 2>&1; cat "$WORK/t"; }

rate() { python3 -c "print(f'{($2 - $1) / max(1e-9, $4 - $3) / 1e6:.2f}')" ; }
cloop() { "$WORK/tlbref" "$@" | sed -E 's/.* = ([0-9.]+) M accesses.*/\1/'; }
median() { python3 -c "import statistics, sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "$@"; }

echo "thpsim end-to-end replay — $(date -u +%F), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $ROUNDS rounds"
# Each round times the C loop, then thpsim's two runs, then the C loop again, and divides thpsim's rate
# by the mean of the two C-loop rates around it: the VM's memory system swings by tens of percent from
# minute to minute, so only rates taken seconds apart are compared. The median of the rounds' ratios
# is the figure.
for spec in "gups 4G 4096 2000000 12000000" "chase 4G 4096 2000000 12000000" "seq 1G 1024 20000000 200000000"; do
    set -- $spec
    name=$1 size=$2 mib=$3 a1=$4 a2=$5
    ratios=()
    for round in $(seq 1 "$ROUNDS"); do
        c1=$(cloop "$name" "$mib" "$a2")
        t1=$(wall "$THPSIM" workload "$name" --size "$size" --accesses "$a1" --enabled never)
        t2=$(wall "$THPSIM" workload "$name" --size "$size" --accesses "$a2" --enabled never)
        c2=$(cloop "$name" "$mib" "$a2")
        ours=$(rate "$a1" "$a2" "$t1" "$t2")
        ratio=$(python3 -c "print(f'{$ours / (($c1 + $c2) / 2):.2f}')")
        ratios+=("$ratio")
        echo "$name $size round $round: thpsim ${t1} s (${a1}) / ${t2} s (${a2}) = ${ours} M accesses/s | C loop ${c1} / ${c2} M/s | ratio ${ratio}×"
    done
    # The exact cache model (--cache-model full) beside the default (sampled), once.
    c1=$(cloop "$name" "$mib" "$a2")
    f1=$(wall "$THPSIM" workload "$name" --size "$size" --accesses "$a1" --enabled never --cache-model full)
    f2=$(wall "$THPSIM" workload "$name" --size "$size" --accesses "$a2" --enabled never --cache-model full)
    c2=$(cloop "$name" "$mib" "$a2")
    full=$(rate "$a1" "$a2" "$f1" "$f2")
    echo "$name $size: median ratio $(median "${ratios[@]}")× (rounds: ${ratios[*]}) | --cache-model full: ${f1} s / ${f2} s = ${full} M/s, $(python3 -c "print(f'{$full / (($c1 + $c2) / 2):.2f}')")× the C loop (${c1} / ${c2} M/s)"
done
if command -v qemu-x86_64 >/dev/null; then
    python3 -c "
import random
random.seed(1)
with open('$WORK/lines.txt', 'w') as f:
    for _ in range(200000): f.write('%d %s\n' % (random.randrange(10**9), ''.join(random.choice('abcdefghij') for _ in range(8))))"
    if ! "$THPSIM" record --out "$WORK/sort.trace" -- sort --parallel=1 "$WORK/lines.txt" -o /dev/null >/dev/null 2>"$WORK/record.err"; then
        echo "sort: recording failed: $(cat "$WORK/record.err")" >&2
        exit 1
    fi
    t=$(wall "$THPSIM" replay "$WORK/sort.trace" --enabled never)
    tf=$(wall "$THPSIM" replay "$WORK/sort.trace" --enabled never --cache-model full)
    accesses=$("$THPSIM" replay "$WORK/sort.trace" --enabled never --json | python3 -c "import json, sys; print(sum(json.load(sys.stdin)['accesses'].values()))")
    echo "sort of 200,000 lines (recorded trace, $((accesses / 1000000)) M accesses): replay ${t} s = $(python3 -c "print(f'{$accesses / $t / 1e6:.1f}')") M accesses/s of the program (--cache-model full: ${tf} s = $(python3 -c "print(f'{$accesses / $tf / 1e6:.1f}')") M/s)"
fi
