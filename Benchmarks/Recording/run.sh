#!/usr/bin/env bash
# Recording benchmark (docs/performance.md, "Recording real programs"): for three real programs,
# the program's native wall time, `thpsim record --out` with QEMU (and Valgrind lackey on a small
# case), the slowdown, the trace's size per million accesses, replay speed, and `record --replay`
# under never and always. Run from the repository root after `swift build -c release`:
#   bash Benchmarks/Recording/run.sh [WORKDIR]
# Needs qemu-x86_64 (Debian: qemu-user), xz, python3, sort; valgrind for the lackey line.
set -euo pipefail
THPSIM=${THPSIM:-$PWD/.build/release/thpsim}
WORK=${1:-$(mktemp -d /tmp/thpsim-recording-XXXX)}
PYTHON=${PYTHON:-/usr/bin/python3}
mkdir -p "$WORK"
cd "$WORK"
[ -x "$THPSIM" ] || { echo "build first: swift build -c release" >&2; exit 1; }

# Inputs, the same on every run (seeded).
"$PYTHON" - <<'PY'
import random, os
random.seed(1)
if not os.path.exists('lines1m.txt'):
    with open('lines1m.txt', 'w') as f:
        for _ in range(1_000_000):
            f.write('%d %s\n' % (random.randrange(10**9), ''.join(random.choice('abcdefghij') for _ in range(8))))
    with open('lines20k.txt', 'w') as f:
        for _ in range(20_000):
            f.write('%d %s\n' % (random.randrange(10**9), ''.join(random.choice('abcdefghij') for _ in range(8))))
if not os.path.exists('text20m.txt'):
    random.seed(7)
    words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 10))) for _ in range(5000)]
    n = 0
    with open('text20m.txt', 'w') as f:
        while n < 20_000_000:
            line = ' '.join(random.choice(words) for _ in range(12)) + ' %d\n' % random.randrange(10**6)
            f.write(line); n += len(line)
with open('dict2m.py', 'w') as f:
    f.write('d = {i: str(i) for i in range(2_000_000)}\n'
            'print(sum(len(d[i]) for i in range(0, 2_000_000, 7)))\n')
PY

seconds() { /usr/bin/time -o time.txt -f %e "$@" >/dev/null 2>&1; cat time.txt; }

row() {   # name, command...: native and recording times, trace size, replay speed, the policy table
    local name=$1; shift
    local native record
    native=$(seconds "$@")
    /usr/bin/time -o time.txt -f %e "$THPSIM" record --out "$name.trace" -- "$@" >"$name.record.out" 2>"$name.record.err"
    record=$(cat time.txt)
    local records bytes accesses replay
    records=$(grep -o '[0-9]* records in' "$name.record.out" | grep -o '^[0-9]*')
    bytes=$(stat -c %s "$name.trace")
    /usr/bin/time -o time.txt -f %e "$THPSIM" replay "$name.trace" --enabled never --json > "$name.replay.json"
    replay=$(cat time.txt)
    accesses=$("$PYTHON" -c "import json; print(sum(json.load(open('$name.replay.json'))['accesses'].values()))")
    echo "$name | native ${native} s | record ${record} s | slowdown $("$PYTHON" -c "print(f'{$record/$native:.1f}')")× |" \
         "$records records, $("$PYTHON" -c "print(f'{$accesses/1e6:.0f}')") M accesses | trace $((bytes >> 20)) MiB =" \
         "$("$PYTHON" -c "print(f'{$bytes/($accesses/1e6)/1024:.0f}')") KiB per M accesses |" \
         "replay ${replay} s = $("$PYTHON" -c "print(f'{$records/$replay/1e6:.1f}')") M records/s, $("$PYTHON" -c "print(f'{$accesses/$replay/1e6:.0f}')") M accesses/s"
    "$THPSIM" run --trace "$name.trace" --enabled never,madvise,always --no-progress > "$name.table.txt"
}

echo "thpsim recording benchmark — $(date -u +%F), $(nproc) cores, $(qemu-x86_64 --version | head -n 1)"
row sort sort lines1m.txt -o /dev/null
row xz xz -9 -k -f text20m.txt
row python "$PYTHON" dict2m.py
if command -v valgrind >/dev/null; then
    native=$(seconds sort lines20k.txt)
    qemu=$(seconds "$THPSIM" record --with qemu --out small-qemu.trace -- sort lines20k.txt)
    lackey=$(seconds "$THPSIM" record --with lackey --out small-lackey.trace -- sort lines20k.txt)
    echo "sort 20,000 lines | native ${native} s | qemu ${qemu} s | lackey ${lackey} s"
fi
start=$(date +%s.%N)
"$THPSIM" record --replay --enabled never,always -- sort lines1m.txt -o /dev/null > replay-table.txt
echo "record --replay sort of 1,000,000 lines, never and always: $("$PYTHON" -c "import time; print(f'{time.time()-$start:.0f}')") s"
for name in sort xz python; do echo; cat "$name.table.txt"; done
