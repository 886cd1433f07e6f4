#!/bin/sh
# Runs every calibration case REPEATS times (default 3) and prints each run; the table in
# docs/machines.md takes the fastest run of each case.
# Usage: Benchmarks/Calibration/run.sh [REPEATS]
set -e
here=$(dirname "$0")
cc -O2 -Wall -o /tmp/tlbcal "$here/tlbcal.c"
cat /sys/kernel/mm/transparent_hugepage/enabled
repeats=${1:-3}
for size in 256 1024 4096; do
  for pattern in gups chase seq; do
    for policy in nohuge huge; do
      for r in $(seq "$repeats"); do /tmp/tlbcal "$pattern" "$size" "$policy"; done
    done
  done
done
