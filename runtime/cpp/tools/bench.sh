#!/usr/bin/env bash
# The `bench` target (runtime/cpp/CMakeLists.txt): time per picture in C++ (audiotoken-rt-cpp bench) and in Python
# (audiotoken-rt bench --backends onnxruntime) on the same bundle, clip, steps and seed, fp32 or int8 on the CPU.
# Like `audiotoken-rt bench`, the two alternate round by round (C++, Python, C++, ...; each a fresh process that
# draws a warm-up picture first) and each keeps its best round, so that a shared CPU's drift hits both alike.
# Arguments: the example binary, the bundle, the clip, the steps[, the rounds].
set -euo pipefail
binary=$1 engines=$2 clip=$3 steps=$4 rounds=${5:-3}
if [ ! -f "$engines/manifest.json" ]; then
  echo "error: no bundle at $engines" >&2
  echo "hint: build the tiny one with \`just demo\`, or pass -DAUDIOTOKEN_RT_BENCH_ENGINES=DIR to cmake" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
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
