#!/bin/bash
# The set of figures docs/performance.md ("Issue 19 before and after") compares between two commits:
# run it in a worktree of each, one after the other, on an otherwise idle machine.
#   git worktree add /tmp/before <commit>; bash Benchmarks/AB/run.sh /tmp/before before
#   bash Benchmarks/AB/run.sh . after
# Each benchmark runs pinned to CPU 1; the framework's tables go to /tmp/bench-LABEL.txt.
set -u
dir=${1:?usage: run.sh CHECKOUT LABEL}; label=${2:?usage: run.sh CHECKOUT LABEL}
cd "$dir/Benchmarks"
out=/tmp/bench-$label.txt
: > "$out"
run() {
    taskset -c 1 swift package --disable-sandbox benchmark --no-progress --target "$1" --filter "$2" \
        --metric wallClock --metric throughput >> "$out" 2>&1
}
run FaultBenchmarks "4 KiB write faults, metadata.*"
run FaultBenchmarks "2 MiB huge write faults, metadata.*"
run MachineBenchmarks "skylake-sp (sequential|random) 4 GiB.*"
run ReplayBenchmarks "replay: TLB-hit.*"
run KhugepagedBenchmarks "khugepaged scan (without collapse|and collapse, metadata).*"
echo "done: $out"
