#!/usr/bin/env bash
# Soak: cardguard in front of a real VictoriaMetrics for DURATION with churning
# series at a steady rate. Prints RSS, goroutines and status codes over time and
# fails if memory or goroutines keep growing or any write fails.
#
#   e2e/soak.sh            # 10 minutes
#   DURATION=3m e2e/soak.sh
#
# Not part of `make test`: it runs for minutes on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10m}
SLICE=${SLICE:-60}            # seconds per load slice; each slice brings new series
CONCURRENCY=${CONCURRENCY:-4}
OUT=${OUT:-e2e/out/soak}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/samples.tsv

make --no-print-directory build tools >/dev/null
go build -o bin/loadgen ./e2e/loadgen

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
VM_PORT=$(free_port); CG_PORT=$(free_port)
WORK=$(mktemp -d)
cleanup() {
	[ -n "${CG_PID:-}" ] && kill "$CG_PID" 2>/dev/null || true
	[ -n "${VM_PID:-}" ] && kill "$VM_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

.cache/bin/victoria-metrics -storageDataPath="$WORK/vm" -httpListenAddr=127.0.0.1:$VM_PORT -loggerLevel=ERROR -retentionPeriod=1d >"$OUT/vm.log" 2>&1 &
VM_PID=$!
bin/cardguard -httpListenAddr=127.0.0.1:$CG_PORT -upstream.url=http://127.0.0.1:$VM_PORT -config=e2e/soak/cardguard.yml -dataDir="$WORK/cg" -loggerLevel=warn >"$OUT/cardguard.log" 2>&1 &
CG_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$CG_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

secs=$(python3 -c "import re,sys; d='$DURATION'; m=re.fullmatch(r'(\d+)([sm])',d); print(int(m[1])*(60 if m[2]=='m' else 1))")
slices=$(( (secs + SLICE - 1) / SLICE ))
printf 'soak: %s, %d slices of %ds, VictoriaMetrics pid %d, cardguard pid %d\n' "$DURATION" "$slices" "$SLICE" "$VM_PID" "$CG_PID"

sample() { # elapsed rss_kib goroutines
	local rss gor
	rss=$(awk '/VmRSS/ {print $2}' /proc/$CG_PID/status)
	gor=$(curl -fs "http://127.0.0.1:$CG_PORT/metrics" | awk '$1=="go_goroutines" {print $2}')
	printf '%s\t%s\t%s\n' "$1" "$rss" "$gor" >>"$OUT/samples.tsv"
}

start=$(date +%s)
for i in $(seq 1 "$slices"); do
	# A new seed each slice: 20% of the series change per round, and the rounds of
	# each slice are new series again, so the set of series keeps churning.
	bin/loadgen -url "http://127.0.0.1:$CG_PORT" -tenants 3 -metrics 50 -series-per-metric 400 -labels 10 \
		-churn 0.2 -rounds 4 -seed "$i" -concurrency "$CONCURRENCY" -duration "${SLICE}s" -label "slice$i" \
		>"$OUT/slice$i.json" 2>>"$OUT/loadgen.err" &
	lg=$!
	while kill -0 $lg 2>/dev/null; do sample $(( $(date +%s) - start )); sleep 10; done
	wait $lg
done
sample $(( $(date +%s) - start ))

python3 - "$OUT" <<'PY'
import json, glob, sys, os
out = sys.argv[1]
rows = [l.split('\t') for l in open(os.path.join(out, 'samples.tsv')).read().split('\n') if l]
rows = [(int(a), int(b), int(float(c))) for a, b, c in rows]
status, samples, secs = {}, 0, 0.0
for f in sorted(glob.glob(os.path.join(out, 'slice*.json'))):
    r = json.loads(open(f).read().strip().splitlines()[-1])
    for k, v in r['status'].items():
        status[k] = status.get(k, 0) + v
    samples += r['samples_ok']; secs += r['elapsed_s']
n = len(rows)
half = rows[n // 2:]
first_half_max = max(r[1] for r in rows[n // 4: n // 2]) if n >= 8 else max(r[1] for r in rows)
second_half_max = max(r[1] for r in half)
g_mid, g_end = max(r[2] for r in rows[n // 4: n // 2] or rows), max(r[2] for r in half)
print(f"samples accepted: {samples} at {samples / max(secs, 1):.0f}/s; status codes: {status}")
print(f"RSS MiB: start {rows[0][1] / 1024:.0f}, max 2nd quarter {first_half_max / 1024:.0f}, max 2nd half {second_half_max / 1024:.0f}, end {rows[-1][1] / 1024:.0f}")
print(f"goroutines: start {rows[0][2]}, max 2nd quarter {g_mid}, max 2nd half {g_end}, end {rows[-1][2]}")
ok = True
bad = {k: v for k, v in status.items() if not k.startswith('2')}
if bad:
    print(f"FAIL: non-2xx answers {bad}"); ok = False
if second_half_max > first_half_max * 1.25:
    print("FAIL: RSS still growing in the second half"); ok = False
if g_end > g_mid + 20:
    print("FAIL: goroutines growing"); ok = False
print("soak: " + ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
