#!/usr/bin/env bash
# The `bench` and `bench-threads` targets (runtime/cpp/CMakeLists.txt).
#
# bench: time per picture in C++ (audiotoken-rt-cpp bench) and in Python (audiotoken-rt bench --backends
# onnxruntime) on the same bundle, clip, steps and seed, fp32 or int8 on the CPU. Like `audiotoken-rt bench`, the
# two alternate round by round (C++, Python, C++, ...; each a fresh process that draws a warm-up picture first) and
# each keeps its best round, so that a shared CPU's drift hits both alike.
# Arguments: the example binary, the bundle, the clip, the steps[, the rounds].
#
# bench-threads (a sixth argument, `threads`): pictures per minute and peak RSS with 1, 2 and 4 threads drawing at
# once (audiotoken-rt-cpp bench --callers N, each thread its own State), on ONE context against a context per
# thread; each configuration a fresh process, all of them in turn each round, the best rate and the highest peak RSS
# of the rounds kept. ONNX Runtime's intra-op threads per session: AUDIOTOKEN_RT_BENCH_ORT_THREADS (default 1: each
# drawing thread computes on itself, so N threads ask for N cores; more than the machine has measures contention).
set -euo pipefail
binary=$1 engines=$2 clip=$3 steps=$4 rounds=${5:-3} mode=${6:-python}
if [ ! -f "$engines/manifest.json" ]; then
  echo "error: no bundle at $engines" >&2
  echo "hint: build the tiny one with \`just demo\`, or pass -DAUDIOTOKEN_RT_BENCH_ENGINES=DIR to cmake" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "$mode" = threads ]; then
  ort_threads=${AUDIOTOKEN_RT_BENCH_ORT_THREADS:-1}
  pictures=${AUDIOTOKEN_RT_BENCH_PICTURES:-4}
  for round in $(seq "$rounds"); do
    for callers in 1 2 4; do
      for contexts in shared own; do
        [ "$callers" = 1 ] && [ "$contexts" = own ] && continue  # one caller: the same thing as shared
        "$binary" bench "$clip" --engines "$engines" --steps "$steps" --callers "$callers" --contexts "$contexts" \
          --pictures "$pictures" --threads "$ort_threads" --json "$out/$callers-$contexts-$round.json" > /dev/null
      done
    done
  done
  python3 - "$out" "$engines" "$steps" "$rounds" "$pictures" "$ort_threads" "$(nproc)" <<'PY'
import glob, json, sys
out, engines, steps, rounds, pictures, ort_threads, cores = sys.argv[1:]
print(f"{engines}: {steps} steps, {pictures} pictures per thread, ONNX Runtime intra-op threads {ort_threads}, "
      f"{cores} cores; the best rate and the highest peak RSS of {rounds} rounds")
print(f"{'threads':>8}{'one ctx/min':>13}{'ctx each/min':>14}{'each/one':>10}{'one ctx MB':>12}{'ctx each MB':>13}")
for callers in (1, 2, 4):
    runs = {c: [json.load(open(p)) for p in glob.glob(f"{out}/{callers}-{c}-*.json")] for c in ("shared", "own")}
    if callers == 1:
        runs["own"] = runs["shared"]
    rate = {c: max(r["pictures_per_minute"] for r in runs[c]) for c in runs}
    rss = {c: max(r["peak_rss_mb"] for r in runs[c]) for c in runs}
    print(f"{callers:>8}{rate['shared']:13.1f}{rate['own']:14.1f}{rate['own'] / rate['shared']:10.2f}"
          f"{rss['shared']:12.1f}{rss['own']:13.1f}")
PY
  exit 0
fi
for round in $(seq "$rounds"); do
  "$binary" bench "$clip" --engines "$engines" --steps "$steps" --rounds 1 --json "$out/cpp-$round.json" > /dev/null
  audiotoken-rt bench "$clip" --engines "$engines" --backends onnxruntime --steps "$steps" --rounds 1 \
    --json "$out/python-$round.json" > "$out/python.log" 2>&1 || { cat "$out/python.log" >&2; exit 1; }
done
python3 - "$out" "$engines" "$steps" "$rounds" <<'PY'
import glob, json, sys
out, engines, steps, rounds = sys.argv[1:]
cpp = [json.load(open(p)) for p in glob.glob(f"{out}/cpp-*.json")]
python = [json.load(open(p))["configs"]["onnxruntime"] for p in glob.glob(f"{out}/python-*.json")]
print(f"{engines}: {steps} steps, the best of {rounds} alternating rounds")
print(f"{'':16}{'C++':>12}{'Python':>12}{'C++/Python':>12}")
for name, key, best in (("total ms", "total_ms", min), ("unet step ms", "unet_step_ms", min),
                        ("peak rss MB", "peak_rss_mb", max)):
    a, b = best(f[key] for f in cpp), best(f[key] for f in python)
    print(f"{name:16}{a:12.1f}{b:12.1f}{a / b:12.2f}")
PY
