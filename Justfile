# Sources of the default engine bundle: Stable Diffusion 1.4 (hub id or local diffusers folder) and the official
# AudioToken checkpoints. Override any of them on the command line: `just beats=/data/BEATs.pt export`.
sd := "CompVis/stable-diffusion-v1-4"
beats := "checkpoints/BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
embedder := "checkpoints/embedder_learned_embeds.bin"
bundle := "engines/sd14"
sample_clip := "../shared/data/vggsound/-_gaZzFfzDQ_517000_527000.wav"  # audio_encoder is validated on it when present

# Export the default bundle (ONNX, each engine checked against PyTorch); extra flags pass through, e.g. `just export --precision fp16 --tensorrt`
export *flags:
    audiotoken-rt export --sd {{sd}} --beats {{beats}} --embedder {{embedder}} --out {{bundle}} {{ if path_exists(sample_clip) == "true" { "--sample-clip " + sample_clip } else { "" } }} {{flags}}

# Export the fast bundle (engines/sd14-fast): LCM-LoRA fused, a UNet of batch 1, TAESD, from the lcm preset's sources
# (export --fast; override one with e.g. `just export-fast --lora DIR`, or pick another with --preset NAME);
# `generate --fast` draws with it
export-fast *flags:
    just export --out {{bundle}}-fast --fast {{flags}}

# Export the one-step bundle (engines/sd14-turbo): Hyper-SD's 1-step LoRA fused (TCD, 1 step), a UNet of batch 1, TAESD
# (export --fast --preset hyper-1step; e.g. `just export-turbo --precision int8 --lora DIR`)
export-turbo *flags:
    just export --out {{bundle}}-turbo --fast --preset hyper-1step {{flags}}

# Set up .venv on a CPU machine: torch==2.13.0 (CPU wheel), the [dev] extras, the test oracles
setup:
    bash .ci/setup

# .venv-serve beside .venv: the runtime with NVIDIA's PyTriton (its own environment: PyTriton needs numpy < 2)
setup-serve:
    python3 -m venv .venv-serve
    .venv-serve/bin/python -m pip install -q --upgrade pip
    .venv-serve/bin/python -m pip install -q -e '.[serve]'

# Ctrl-C is its normal end, so just prints no recipe error for it (a failure keeps its exit status and serve's error)
# Serve the demo bundle (just demo) on Triton at localhost:8000 (HTTP), 8001 (gRPC), 8002 (metrics); Ctrl-C stops it
[no-exit-message]
serve-demo:
    test -x .venv-serve/bin/audiotoken-rt || just setup-serve
    test -d .cache/demo/engines || just demo
    .venv-serve/bin/audiotoken-rt serve .cache/demo/engines --address 127.0.0.1 --instances 2

# Load figures of serve: requests/min and p50/p95 latency at 1, 2 and 4 instances, on the tiny demo bundle and on the
# SD 1.5-size int8 bundle at 256x256 (4 clients, 16 requests each; JSON in .cache/bench/)
bench-serve:
    test -x .venv-serve/bin/audiotoken-rt || just setup-serve
    test -d .cache/demo/engines || just demo
    just bench-bundle 256 int8
    .venv-serve/bin/python -m runtime.serving.bench .cache/demo/engines tests/data/3YOH4c9HXpo_290000_300000.wav --json .cache/bench/serve-tiny.json
    .venv-serve/bin/python -m runtime.serving.bench .cache/bench/engines-256-int8 tests/data/3YOH4c9HXpo_290000_300000.wav --steps 10 --requests 8 --json .cache/bench/serve-256-int8.json

# Soak test of serve: 4 clients for `seconds` against the tiny demo bundle, good requests (each must be the CLI's
# picture, bit for bit) mixed with every hostile kind (each must be refused in one line); the peak memory of the
# server's processes and its state at the end (JSON in .cache/bench/soak.json; docs/serving.md has a run's figures)
soak seconds="300":
    test -x .venv-serve/bin/audiotoken-rt || just setup-serve
    test -d .cache/demo/engines || just demo
    .venv-serve/bin/python -m runtime.serving.soak .cache/demo/engines tests/data/3YOH4c9HXpo_290000_300000.wav {{ if path_exists(sample_clip) == "true" { sample_clip } else { "" } }} --seconds {{seconds}} --json .cache/bench/soak.json

# .venv-openvino beside .venv: the same install, with ONNX Runtime's OpenVINO build (onnxruntime-openvino) for onnxruntime
setup-openvino:
    python3 -m venv .venv-openvino
    .venv-openvino/bin/python -m pip install -q torch==2.13.0
    .venv-openvino/bin/python -m pip install -q -e '.[export]' pytest
    .venv-openvino/bin/python -m pip install -q --no-deps open-clip-torch==3.3.0  # the CLIP BPE vocabulary the tests' random models use
    .venv-openvino/bin/python -m pip uninstall -y -q onnxruntime
    .venv-openvino/bin/python -m pip install -q onnxruntime-openvino

# The test suite (what .ci/run runs): unit, export and runtime tests on the CPU; gpu tests skip without CUDA
test *flags:
    python -m pytest -q {{flags}}

# Tiny random models -> engines -> a picture from the clip that ships in tests/data/ (about a minute on a CPU)
demo:
    audiotoken-rt make-random .cache/demo/models --force
    audiotoken-rt export --sd .cache/demo/models/sd --beats .cache/demo/models/beats.pt --embedder .cache/demo/models/embedder.bin --out .cache/demo/engines --force
    audiotoken-rt generate tests/data/3YOH4c9HXpo_290000_300000.wav --engines .cache/demo/engines --out .cache/demo/pictures --seed 0 --overwrite --verbose
    @echo "picture: .cache/demo/pictures/3YOH4c9HXpo_290000_300000.png"

# Several sounds in one picture on the tiny models (random weights: the layout is what it shows): each layout's
# regions beside the picture composed with it, in docs/compose-sheet.png
demo-compose:
    test -d .cache/demo/models || audiotoken-rt make-random .cache/demo/models
    audiotoken-rt export --sd .cache/demo/models/sd --beats .cache/demo/models/beats.pt --embedder .cache/demo/models/embedder.bin --out .cache/demo/engines-256 --height 256 --width 256 --update
    just _compose-sheet

_compose-sheet:
    #!/usr/bin/env python
    from pathlib import Path
    from PIL import Image, ImageDraw
    from runtime.pipeline import ComposeOptions, Pipeline
    from runtime.regions import layout_picture, parse_layout, region_weights
    pipe = Pipeline.open(".cache/demo/engines-256")
    clips = sorted(Path("tests/data").glob("*.wav")) + sorted(Path("../shared/data/vggsound").glob("*.wav"))
    layouts = [("left,right", None), ("top,bottom", None), ("2x2", None), ("0,0,0.4,1;0.55,0.1,0.95,0.6", "a park at dusk")]
    size, rows = 256, []
    for layout, background in layouts:
        boxes = parse_layout(layout)
        sounds = [clips[k % len(clips)] for k in range(len(boxes))]
        options = ComposeOptions(layout=layout, background=background, seed=1, steps=8)
        weights = region_weights(boxes, pipe.latent_shape[2:], background=background is not None)
        drawn = pipe.compose(sounds, options)[0]
        title = f"--layout {layout}" + (f' --background "{background}"' if background else "")
        rows.append((title, layout_picture(weights, boxes, (size, size)), drawn))
    sheet = Image.new("RGB", (2 * size + 30, len(rows) * (size + 40) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, regions, drawn) in enumerate(rows):
        top = 10 + r * (size + 40)
        draw.text((10, top), title, fill="black", font_size=14)
        sheet.paste(regions, (10, top + 25))
        sheet.paste(drawn, (size + 20, top + 25))
    Path("docs").mkdir(exist_ok=True)
    sheet.save("docs/compose-sheet.png")
    print("wrote docs/compose-sheet.png")

# Benchmark onnxruntime against torch on SD 1.5 + BEATs (random weights, 256x256, CPU) per bundle precision; JSON in .cache/bench/
bench steps="10" size="256" precisions="int8 fp32":
    for p in {{precisions}}; do \
        just bench-bundle {{size}} $p && \
        audiotoken-rt bench tests/data/3YOH4c9HXpo_290000_300000.wav --engines .cache/bench/engines-{{size}}-$p --backends onnxruntime,torch --steps {{steps}} --json .cache/bench/bench-{{size}}-$p.json || exit 1; \
    done

# Benchmark onnxruntime on OpenVINO (bf16 UNet and VAE where the CPU has bf16) against torch, on the fp32 bundle
bench-openvino steps="10" size="256":
    test -x .venv-openvino/bin/audiotoken-rt || just setup-openvino
    just bench-bundle {{size}} fp32
    .venv-openvino/bin/audiotoken-rt bench tests/data/3YOH4c9HXpo_290000_300000.wav --engines .cache/bench/engines-{{size}}-fp32 --backends onnxruntime,torch --device openvino --steps {{steps}} --json .cache/bench/bench-{{size}}-openvino.json

# The one-step bundles' export flags: the hyper-1step preset (Hyper-SD's one-step LoRA stand-in fused into the UNet,
# TAESD, a UNet of batch 1; bench's turbo draws that preset's recipe)
bench_turbo := "--fast --preset hyper-1step --lora .cache/bench/models/hyper-sd --tiny-vae .cache/bench/models/taesd"

# The fast path against the default recipe and the PyTorch reference, SD 1.5 + BEATs (random weights) at 512x512 with
# int8 bundles: default (DPM++ 25 steps, guidance 7.5, full VAE), fast (LCM 4 steps, guidance 1, TAESD), torch-fast,
# and the one-step recipe (bench's turbo: 1 step, guidance 1, TAESD) as turbo, torch-turbo and turbo-small (on the
# BK-SDM-Tiny stand-in)
bench-fast size="512" precision="int8" rounds="3":
    just bench-bundle {{size}} {{precision}}
    just bench-bundle {{size}} {{precision}} -fast "--fast --lcm-lora .cache/bench/models/lcm-lora --tiny-vae .cache/bench/models/taesd"
    just bench-bundle {{size}} {{precision}} -turbo "{{bench_turbo}}"
    just bench-bundle {{size}} {{precision}} -turbo-small "{{bench_turbo}} --unet .cache/bench/models/bk-sdm-tiny"
    audiotoken-rt bench tests/data/3YOH4c9HXpo_290000_300000.wav --engines .cache/bench/engines-{{size}}-{{precision}} \
        --fast-engines .cache/bench/engines-{{size}}-{{precision}}-fast --engines turbo=.cache/bench/engines-{{size}}-{{precision}}-turbo \
        --engines torch-turbo=.cache/bench/engines-{{size}}-{{precision}}-turbo --engines turbo-small=.cache/bench/engines-{{size}}-{{precision}}-turbo-small \
        --rounds {{rounds}} --json .cache/bench/bench-{{size}}-fast.json

# Live's figures on the fast and turbo bundles of bench-fast (512x512, int8): frames per minute and the latency from a
# window's end to its picture (p50, p95), a `seconds`-long stream heard in real time, a window every second
bench-live size="512" precision="int8" seconds="60":
    just bench-bundle {{size}} {{precision}} -fast "--fast --lcm-lora .cache/bench/models/lcm-lora --tiny-vae .cache/bench/models/taesd"
    just bench-bundle {{size}} {{precision}} -turbo "{{bench_turbo}}"
    just live-figures .cache/bench/engines-{{size}}-{{precision}}-fast fast {{seconds}} --fast
    just live-figures .cache/bench/engines-{{size}}-{{precision}}-turbo turbo {{seconds}} --fast

# Live's figures on one bundle (e.g. `just live-figures .cache/demo/engines tiny 30 --steps 4`): the clip of tests/data
# loop-tiled to `seconds`, frames in .cache/bench/live-NAME/, JSON in .cache/bench/live-NAME.json;
# frames/min and latency p50/p95 of a stream heard in real time (live --realtime --every 1)
live-figures engines name seconds="60" *flags:
    mkdir -p .cache/bench
    python -c "import sys, numpy as np, soundfile as sf; x, r = sf.read(sys.argv[1], dtype='float32'); n = int(sys.argv[3]) * r; sf.write(sys.argv[2], np.tile(x, -(-n // len(x)))[:n], r)" tests/data/3YOH4c9HXpo_290000_300000.wav .cache/bench/live-{{seconds}}s.wav {{seconds}}
    audiotoken-rt live .cache/bench/live-{{seconds}}s.wav --engines {{engines}} --out .cache/bench/live-{{name}} --every 1 --realtime --seed 0 --overwrite --json .cache/bench/live-{{name}}.json {{flags}} > /dev/null

# The benchmark's models (make-random --arch sd15, made again when a stand-in is missing) and its bundle of one size
# and precision (kept while up to date)
[private]
bench-bundle size precision suffix="" flags="":
    test -f .cache/bench/models/taesd/config.json && test -f .cache/bench/models/bk-sdm-tiny/unet/config.json && test -f .cache/bench/models/hyper-sd/Hyper-SD15-1step-lora.safetensors || audiotoken-rt make-random .cache/bench/models --arch sd15 --force
    audiotoken-rt export --sd .cache/bench/models/sd --beats .cache/bench/models/beats.pt --embedder .cache/bench/models/embedder.bin --out .cache/bench/engines-{{size}}-{{precision}}{{suffix}} --height {{size}} --width {{size}} --precision {{precision}} --update {{flags}}

# Lint and format check with ruff (configured in pyproject.toml), as CI runs them; `just fix` applies both
lint:
    ruff check .
    ruff format --check .
    pyright --project pyproject.toml

fix:
    ruff check --fix .
    ruff format .

# The C and C++ host library (runtime/cpp): build it (Release) in .cache/cpp-build/release against the onnxruntime
# wheel's libonnxruntime and Debian's ONNX Runtime headers (.ci/setup fetches them). `just cpp bench` then times a
# picture in C++ and in Python on .cache/demo/engines (`just demo` builds it), `just cpp bench-threads` the pictures
# per minute and peak RSS of 1, 2 and 4 threads on one context against a context each; `just cpp install` installs into
# .cache/cpp-install (CMake package: find_package(audiotoken_rt))
cpp target="all":
    cmake -S runtime/cpp -B .cache/cpp-build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX={{justfile_directory()}}/.cache/cpp-install -DONNXRUNTIME_INCLUDE_DIR={{justfile_directory()}}/.cache/onnxruntime-dev/usr/include/onnxruntime -DONNXRUNTIME_LIBRARY="$(python -c 'import onnxruntime, pathlib; print(sorted((pathlib.Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))[0])')"
    cmake --build .cache/cpp-build/release -j2 --target {{target}}

# The same for aarch64 (Jetson, Raspberry Pi, Graviton...): cross-built in .cache/cpp-build/arm64 with Debian's
# cross compiler and runtime/cpp/cmake/aarch64-linux-gnu.cmake, against the arm64 packages of its libraries and the
# aarch64 onnxruntime wheel's libonnxruntime (`bash .ci/setup arm64` installs them; docs/cpp.md, "Cross-building")
cpp-arm64 target="all":
    test -f .cache/onnxruntime-aarch64/libonnxruntime.so.$(python -c 'import onnxruntime; print(onnxruntime.__version__)') || { echo "error: no aarch64 ONNX Runtime in .cache/onnxruntime-aarch64: run bash .ci/setup arm64" >&2; exit 1; }
    cmake -S runtime/cpp -B .cache/cpp-build/arm64 -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE={{justfile_directory()}}/runtime/cpp/cmake/aarch64-linux-gnu.cmake -DCMAKE_INSTALL_PREFIX={{justfile_directory()}}/.cache/cpp-install-arm64 -DONNXRUNTIME_INCLUDE_DIR={{justfile_directory()}}/.cache/onnxruntime-dev/usr/include/onnxruntime -DONNXRUNTIME_LIBRARY={{justfile_directory()}}/.cache/onnxruntime-aarch64/libonnxruntime.so.$(python -c 'import onnxruntime; print(onnxruntime.__version__)')
    cmake --build .cache/cpp-build/arm64 -j2 --target {{target}}

# Run the aarch64 example program (just cpp-arm64) on this machine under qemu-user, e.g.
# `just cpp-arm64-run generate tests/data/3YOH4c9HXpo_290000_300000.wav --engines .cache/demo/engines --out .cache/arm64.png`
# (trixie's qemu 10 from .cache/qemu: bookworm's 7.2 shows the host's /proc/cpuinfo, on which ONNX Runtime's CPU
# detection crashes; no -L: the arm64 C library of multiarch loads, the cross compiler's has another build of glibc)
[positional-arguments]
cpp-arm64-run *args:
    .cache/qemu/usr/bin/qemu-aarch64 .cache/cpp-build/arm64/audiotoken-rt-cpp "$@"

# Fuzz the C API's parsers (runtime/cpp/fuzz: manifest, tokenizer.json, prompt, waveform, clip file) with libFuzzer,
# ASan and UBSan for `seconds` each, longer than the test run's 20 s; a finding's input is kept in .cache/fuzz/
fuzz seconds="300":
    AUDIOTOKEN_RT_FUZZ_SECONDS={{seconds}} python -m pytest -q tests/test_cpp.py -m slow -k fuzzing
