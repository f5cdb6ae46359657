"""The torch-free runtime on a tiny bundle: tokenizer, backends A/B, the diffusers reference, the CLI and the API."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from audiotoken_rt.cli import app
from runtime.backends import OnnxRuntimeBackend
from runtime.errors import ConfigError, NumericsError
from runtime.picture import read_png_metadata, save_png
from runtime.pipeline import GenerationOptions, Pipeline, Stopwatch
from runtime.tokenizer import PromptTokenizer
from tests.support import psnr

STEPS = 4


@pytest.fixture(scope="module")
def pipeline(tiny_bundle) -> Pipeline:
    return Pipeline.open(tiny_bundle)


def test_tokenizer_matches_transformers_with_the_placeholder(tiny_bundle, tiny_models):
    from transformers import CLIPTokenizer

    from audiotoken.text import add_placeholder, tokenize

    ours = PromptTokenizer.from_folder(tiny_bundle / "tokenizer")
    reference = CLIPTokenizer.from_pretrained(tiny_models / "sd" / "tokenizer")
    assert ours.placeholder_id == add_placeholder(reference) == 49408
    for prompt in ("a photo of <*>, 4k, high resolution", "A  Photo of <*>!! Naïve café, 8K", "<*>barking dogs"):
        assert ours.encode(prompt).tolist() == tokenize(reference, [prompt])[0].tolist()
    assert ours.encode("", require_placeholder=False).tolist() == [49406] + [49407] * 76


def test_tokenizer_errors(tiny_bundle):
    tokenizer = PromptTokenizer.from_folder(tiny_bundle / "tokenizer")
    with pytest.raises(ConfigError, match="holds <\\*> 0 times; it needs <\\*> exactly once"):
        tokenizer.encode("a photo of a dog")
    with pytest.raises(ConfigError, match="tokens long; CLIP takes at most 77"):
        tokenizer.encode("<*> " + "loud " * 80)


def test_onnxruntime_and_torch_backends_draw_the_same_picture(tiny_bundle, clips):
    options = GenerationOptions(steps=STEPS, seed=11)
    onnx = Pipeline.open(tiny_bundle).generate(clips[0], options)[0]
    torch_ = Pipeline.open(tiny_bundle, backend="torch").generate(clips[0], options)[0]
    assert psnr(onnx, torch_) >= 40


def test_runtime_equals_the_diffusers_reference_pipeline(pipeline, tiny_models, clips):
    # the official recipe on both sides: PNDM, guidance 7.5, the same seeded numpy latents
    from audiotoken.pipeline import AudioTokenPipeline

    reference = AudioTokenPipeline.from_pretrained(
        tiny_models / "sd", tiny_models / "beats.pt", tiny_models / "embedder.bin"
    )
    expected = reference([clips[1]], seed=5, num_inference_steps=STEPS, progress=False)[0]
    ours = pipeline.generate(clips[1], GenerationOptions.official(steps=STEPS, seed=5))[0]
    assert psnr(ours, expected) >= 40


def test_waveforms_at_any_rate_and_threads(pipeline, clips):
    import soundfile as sf

    samples, rate = sf.read(clips[0], dtype="float32")
    options = GenerationOptions(steps=2, seed=3)
    from_file = np.asarray(pipeline.generate(clips[0], options)[0])
    from_array = np.asarray(pipeline.generate(samples, options, sample_rate=rate)[0])
    assert np.array_equal(from_file, from_array)
    results = [None] * 3

    def draw(k: int) -> None:
        results[k] = np.asarray(pipeline.generate(clips[0], options)[0])

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, from_file) for r in results)


def test_the_unconditional_embedding_is_computed_once(tiny_bundle, clips):
    pipeline = Pipeline.open(tiny_bundle)
    calls = []
    run = pipeline.backend.run
    pipeline.backend.run = lambda engine, feeds: calls.append(engine) or run(engine, feeds)
    options = GenerationOptions(steps=1, seed=0)
    pipeline.generate(clips[0], options)
    pipeline.generate(clips[1], options)
    assert calls.count("text_encoder") == 3  # cond, uncond, cond: the second uncond comes from the cache


@pytest.mark.parametrize("scheduler", ["dpm++2m", "euler-a"])
def test_the_kth_picture_is_the_one_its_seed_draws_alone(pipeline, clips, scheduler):
    # euler-a draws fresh noise every step: from the picture's own stream, not from the next picture's initial noise
    result = pipeline.draw(clips[0], GenerationOptions(steps=3, seed=20, num_images=2, scheduler=scheduler))
    alone = [
        pipeline.generate(clips[0], GenerationOptions(steps=3, seed=seed, scheduler=scheduler))[0] for seed in (20, 21)
    ]
    assert result.seeds == [20, 21]
    for drawn, single in zip(result.pictures, alone, strict=True):
        assert np.array_equal(np.asarray(drawn), np.asarray(single))
    assert not np.array_equal(np.asarray(result.pictures[0]), np.asarray(result.pictures[1]))


def test_a_stage_adds_its_time_as_it_ends_also_by_an_exception_and_repeats_add_up(monkeypatch):
    clock = [0.0]  # seconds, moved by hand: the stopwatch reads this clock
    monkeypatch.setattr("runtime.pipeline.time", SimpleNamespace(perf_counter=lambda: clock[0]))
    seen: list[tuple[str, int, int]] = []
    watch = Stopwatch(lambda *event: seen.append(event))
    with watch.stage("denoise", 3):
        clock[0] += 0.5
        with watch.timed("unet"):  # a part of the stage: timed inside it, not shown
            clock[0] += 0.25
        with watch.timed("unet"):
            clock[0] += 0.125
    with pytest.raises(NumericsError), watch.stage("decode_latents"):
        clock[0] += 0.0625
        raise NumericsError("decode_latents: NaN")
    with watch.stage("denoise", 3):  # a second picture's loop adds to the first's
        clock[0] += 1.0
    assert watch.stages == {"denoise": 1875.0, "unet": 375.0, "decode_latents": 62.5}  # ms
    assert seen == [("denoise", 0, 3), ("decode_latents", 0, 1), ("denoise", 0, 3)]
    unseen = Stopwatch()  # no progress: timed all the same
    with unseen.stage("load_audio"):
        clock[0] += 0.001
    assert unseen.stages["load_audio"] == pytest.approx(1.0)


def test_a_drawing_shows_its_stages_in_order_and_their_times_fit_in_its_wall_time(pipeline, clips):
    seen: list[tuple[str, int, int]] = []
    watch = Stopwatch(lambda *event: seen.append(event))
    options = GenerationOptions(steps=STEPS, scheduler="ddim", seed=3, num_images=2)
    started = time.perf_counter()
    result = pipeline.draw(clips[0], options, watch=watch)
    wall_ms = (time.perf_counter() - started) * 1000
    assert result.timings is watch
    picture = [("denoise", done, STEPS) for done in range(STEPS + 1)] + [("decode_latents", 0, 1)]
    assert seen == [("load_audio", 0, 1), ("encode_audio", 0, 1), ("encode_prompt", 0, 1), *picture, *picture]
    assert watch.steps == 2 * STEPS and watch.unet_calls == 2 * STEPS  # guided: both halves in one batch-2 call
    drawn = ("load_audio", "encode_audio", "encode_prompt", "denoise", "decode_latents")
    assert set(watch.stages) == {*drawn, "unet"}
    assert 0 < sum(watch.stages[stage] for stage in drawn) <= wall_ms  # the stages follow one another
    assert 0 < watch.stages["unet"] <= watch.stages["denoise"]  # the UNet calls run inside the loop


def test_save_png_is_atomic_and_never_overwrites_silently(tmp_path):
    picture = Image.new("RGB", (8, 8), (200, 10, 10))
    path = save_png(picture, tmp_path / "a.png", {"seed": 4, "prompt": "a photo of <*>"})
    assert read_png_metadata(path) == {"seed": "4", "prompt": "a photo of <*>"}
    with pytest.raises(ConfigError, match="a.png: already exists"):
        save_png(Image.new("RGB", (8, 8)), path, {})
    assert np.asarray(Image.open(path))[0, 0].tolist() == [200, 10, 10]
    save_png(Image.new("RGB", (8, 8)), path, {}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary file left


@pytest.mark.optional  # skips where the provider is installed (a GPU or OpenVINO machine)
@pytest.mark.parametrize("device", ["cuda", "tensorrt", "openvino"])
def test_missing_provider_is_a_clear_error(tiny_bundle, device):
    import onnxruntime as ort

    from runtime.backends import INSTALL_HINTS, PROVIDERS
    from runtime.bundle import Bundle

    if PROVIDERS[device] in ort.get_available_providers():
        pytest.skip(f"this ONNX Runtime has {PROVIDERS[device]}")
    with pytest.raises(ConfigError, match=f"ONNX Runtime here has no {PROVIDERS[device]}") as caught:
        OnnxRuntimeBackend(Bundle.open(tiny_bundle), device=device)
    assert caught.value.hint == INSTALL_HINTS[device]


@pytest.mark.optional  # needs the onnxruntime-openvino build (just setup-openvino), which CI does not install
def test_openvino_runs_unet_and_vae_in_bf16_where_the_cpu_has_amx_and_draws_nearly_the_cpu_picture(tiny_bundle, clips):
    import onnxruntime as ort

    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs the onnxruntime-openvino build of ONNX Runtime")
    pipeline = Pipeline.open(tiny_bundle, device="openvino")
    amx = "amx_bf16" in Path("/proc/cpuinfo").read_text().split()  # bf16 only where the CPU has AMX's tiles
    for engine in ("audio_encoder", "text_encoder", "unet", "vae_decoder"):
        provider, options = pipeline.backend.provider_chain(engine)[0]
        hint = json.loads(options["load_config"])["CPU"]["INFERENCE_PRECISION_HINT"]
        assert provider == "OpenVINOExecutionProvider"
        assert hint == ("bf16" if amx and engine in ("unet", "vae_decoder") else "f32"), engine
    options = GenerationOptions(steps=STEPS, seed=5)
    openvino = pipeline.generate(clips[0], options)[0]
    cpu = Pipeline.open(tiny_bundle).generate(clips[0], options)[0]
    assert psnr(openvino, cpu) >= 30


def test_bench_runs_the_torch_reference_beside_each_device():
    from runtime.commands.bench import worker_device

    assert [worker_device("torch", d) for d in ("cpu", "openvino", "cuda", "tensorrt")] == [
        "cpu",
        "cpu",
        "cuda",
        "cuda",
    ]
    assert [worker_device("onnxruntime", d) for d in ("cpu", "openvino")] == ["cpu", "openvino"]


def test_bench_reports_every_backend_with_ratios(tiny_bundle, clips, tmp_path):
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        ["bench", str(clips[0]), "--engines", str(tiny_bundle), "--steps", "2", "--rounds", "1", "--json", str(report)],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(report.read_text())
    assert set(figures["configs"]) == {"onnxruntime", "torch"}
    for config in figures["configs"].values():
        assert set(config["stages"]) == {"load_audio", "encode_audio", "encode_prompt", "denoise", "decode_latents"}
        assert config["total_ms"] > 0 and config["peak_rss_mb"] > 0 and config["unet_step_ms"] > 0
        assert config["recipe"] == {
            "scheduler": "dpm++2m",
            "steps": 2,
            "guidance": 7.5,
            "eta": 0.0,
            "timestep_spacing": None,
            "unet_batch": 2,
            "decoder": "sd-vae",
        }
    assert set(figures["ratios"]["onnxruntime / torch"]) == {"unet_step", "total", "peak_rss", "total_by_round"}
    assert [len(config["round_totals_ms"]) for config in figures["configs"].values()] == [1, 1]


def test_bench_fast_measures_default_fast_and_torch_fast(monkeypatch):
    import runtime.commands.bench as bench
    from runtime.pipeline import GenerationOptions

    plain, fast = Path("plain"), Path("fast")
    configs, pairs = bench.bench_configs(plain, fast, ["onnxruntime"], "cpu", bench.BenchOptions())
    assert [(c.name, c.bundle, c.backend, c.options) for c in configs] == [
        ("default", plain, "onnxruntime", GenerationOptions()),  # the plain bundle's own recipe
        ("fast", fast, "onnxruntime", GenerationOptions(fast=True)),
        ("torch-fast", fast, "torch", GenerationOptions(fast=True)),
    ]
    steps = {"default": 400.0, "fast": 100.0, "torch-fast": 300.0}
    monkeypatch.setattr(bench, "run_worker", lambda config, clip, repeats: {
        "stages": {}, "total_ms": 10 * steps[config.name], "unet_step_ms": steps[config.name], "open_ms": 1.0,
        "peak_rss_mb": steps[config.name],
    })  # fmt: skip
    relative = bench.ratios(bench.run_rounds(configs, Path("clip.wav"), 1, 1), pairs)
    assert relative["fast / default"] == {"unet_step": 0.25, "total": 0.25, "peak_rss": 0.25, "total_by_round": [0.25]}
    assert relative["fast / torch-fast"]["total"] == pytest.approx(1 / 3)


def test_bench_named_configurations_draw_their_recipe_on_their_bundle_and_backend():
    """``--engines NAME=DIR``: NAME is [BACKEND-]RECIPE[-LABEL]; what just bench-fast measures, in order, with the
    ratios of each over its labelless form (else default) and over its torch form."""
    import runtime.commands.bench as bench
    from runtime.pipeline import GenerationOptions

    plain, fast, turbo, small = Path("plain"), Path("fast"), Path("turbo"), Path("small")
    one_step = GenerationOptions(scheduler="tcd", steps=1, guidance=1.0, eta=1.0)  # Hyper-SD's one-step card
    named = [("turbo", turbo), ("torch-turbo", turbo), ("turbo-small", small)]
    configs, pairs = bench.bench_configs(plain, fast, ["onnxruntime"], "cpu", bench.BenchOptions(), named)
    assert [(c.name, c.bundle, c.backend, c.device, c.options) for c in configs] == [
        ("default", plain, "onnxruntime", "cpu", GenerationOptions()),
        ("fast", fast, "onnxruntime", "cpu", GenerationOptions(fast=True)),
        ("torch-fast", fast, "torch", "cpu", GenerationOptions(fast=True)),
        ("turbo", turbo, "onnxruntime", "cpu", one_step),
        ("torch-turbo", turbo, "torch", "cpu", one_step),
        ("turbo-small", small, "onnxruntime", "cpu", one_step),
    ]
    assert pairs == [
        ("fast", "default"),
        ("fast", "torch-fast"),
        ("turbo", "default"),
        ("turbo", "torch-turbo"),
        ("turbo-small", "turbo"),
    ]
    assert bench.engines_given(["plain", "turbo=turbo", "torch-turbo-small=small"]) == (
        plain,
        [("turbo", turbo), ("torch-turbo-small", small)],
    )
    torch_on_cuda, _ = bench.bench_configs(None, None, [], "tensorrt", bench.BenchOptions(), [("torch-turbo", turbo)])
    assert (torch_on_cuda[0].backend, torch_on_cuda[0].device) == ("torch", "cuda")


@pytest.mark.parametrize(
    "args, message",
    [
        ("--engines plain --engines fastest=fast", "--engines fastest=...: a configuration's name is [BACKEND-]RECIPE"),
        ("--engines plain --engines cuda-turbo=turbo", "--engines cuda-turbo=...: a configuration's name"),
        ("--engines plain --engines turbo=a --engines turbo=b", "--engines: configuration turbo given twice"),
        ("--engines plain --engines other", "--engines: 2 plain bundle folders (plain, other); at most one"),
        ("--engines turbo=turbo --fast-engines fast", "--engines: no plain bundle folder given"),
    ],
)
def test_bench_refuses_what_names_no_configuration_in_one_line(args, message):
    result = CliRunner().invoke(app, ["bench", "clip.wav", *args.split()])  # refused before any file is read
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"error: {message}"), result.output
    assert len(lines) <= 2 and all(line.startswith(("error: ", "hint: ")) for line in lines), result.output


def test_open_rehashes_only_files_that_changed(tiny_bundle, tmp_path):
    import os

    from runtime.bundle import Bundle, verify
    from runtime.errors import BundleError

    bundle = shutil.copytree(tiny_bundle, tmp_path / "copy")
    Bundle.open(bundle)  # hashes everything once and remembers size + mtime
    unet = bundle / "unet.onnx"
    stat = unet.stat()
    data = bytearray(unet.read_bytes())
    data[-1] ^= 0xFF
    unet.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="unet.onnx has sha256"):
        Bundle.open(bundle)  # a new mtime: hashed again, the change is caught
    os.utime(unet, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    Bundle.open(bundle)  # same size and mtime as when it was checked: trusted (the documented trade-off)
    with pytest.raises(BundleError, match="unet.onnx has sha256"):
        verify(bundle)  # `info` and export always hash everything


def test_bench_rounds_alternate_configs_and_keep_the_best(monkeypatch):
    import runtime.commands.bench as bench
    from runtime.pipeline import GenerationOptions

    calls = []
    figures = iter([(100, 5, 900), (300, 9, 800), (80, 7, 950), (310, 8, 700)])  # (total, step, rss) per call

    def fake_worker(config, clip, repeats):
        calls.append(config.name)
        total, step, rss = next(figures)
        return {
            "stages": {"denoise": total - 1},
            "total_ms": total,
            "unet_step_ms": step,
            "open_ms": 1.0,
            "peak_rss_mb": rss,
        }

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    configs = [bench.Config(name, Path("b"), name, "cpu", GenerationOptions()) for name in ("onnxruntime", "torch")]
    best = bench.run_rounds(configs, Path("clip.wav"), 1, rounds=2)
    assert calls == ["onnxruntime", "torch", "onnxruntime", "torch"]
    assert (
        best["onnxruntime"]["total_ms"],
        best["onnxruntime"]["unet_step_ms"],
        best["onnxruntime"]["peak_rss_mb"],
    ) == (80, 5, 950)
    assert (best["torch"]["total_ms"], best["torch"]["stages"]["denoise"], best["torch"]["peak_rss_mb"]) == (
        300,
        299,
        800,
    )
    relative = bench.ratios(best, [("onnxruntime", "torch")])["onnxruntime / torch"]
    assert relative["total"] == pytest.approx(80 / 300)  # best over best
    assert relative["total_by_round"] == pytest.approx([100 / 300, 80 / 310])  # each round's pair, as measured


def test_bench_tables_read_at_100_columns_with_a_row_per_configuration():
    """The largest set bench measures (just bench-fast's: --fast-engines and the turbo configurations, with --edit and
    --regions: 18 configurations, 27 ratios) with SD 1.5-sized figures on a CPU, rendered at 100 columns: every line
    fits, each configuration and ratio is one row on one line (nothing wraps) whose name and figures are whole, in
    order."""
    import io
    import re

    from rich.cells import cell_len
    from rich.console import Console

    import runtime.commands.bench as bench

    named = [("turbo", Path("turbo")), ("torch-turbo", Path("turbo")), ("turbo-small", Path("small"))]
    configs, pairs = bench.bench_configs(
        Path("plain"), Path("fast"), ["onnxruntime"], "cpu", bench.BenchOptions(edit=True, regions=True), named
    )
    recipes = {  # as each recipe draws on its bundle (default: a plain bundle's; fast and turbo: batch 1, TAESD)
        "default": ("dpm++2m", 25, 7.5, None, 2, "sd-vae"),
        "fast": ("lcm", 4, 1.0, None, 1, "taesd"),
        "turbo": ("tcd", 1, 1.0, None, 1, "taesd"),
    }
    rng = np.random.default_rng(0)
    results = {}
    for config in configs:
        stages = [s for s in bench.STAGES if s != "encode_picture" or config.name.endswith("-edit")]
        recipe = next(recipe for recipe in recipes if recipe in config.name)
        scheduler, steps, guidance, spacing, batch, decoder = recipes[recipe]
        results[config.name] = {
            "stages": {stage: float(rng.uniform(1, 99999)) for stage in stages},
            "total_ms": float(rng.uniform(10000, 999999)),
            "unet_step_ms": float(rng.uniform(100, 99999)),
            "peak_rss_mb": float(rng.uniform(100, 99999)),
            "round_totals_ms": [float(rng.uniform(10000, 999999)) for _ in range(3)],
            "recipe": {
                "scheduler": scheduler,
                "steps": steps,
                "guidance": guidance,
                "eta": 1.0 if scheduler == "tcd" else 0.0,  # the longest recipe text: 'tcd 1, eta 1, ...'
                "timestep_spacing": spacing,
                "unet_batch": batch,
                "decoder": decoder,
            },
        }
    relative = bench.ratios(results, pairs)
    assert len(results) == 18 and len(relative) == 27
    console = Console(file=io.StringIO(), width=100, color_system=None)
    for table in bench.bench_tables("plain: fp32, 512x512, cpu", results, relative):
        console.print(table)
    lines = console.file.getvalue().splitlines()
    assert max(cell_len(line) for line in lines) <= 100 and "…" not in "".join(lines)

    def cells(name: str) -> list[list[str]]:
        """The numbers on each line that a row named ``name`` starts; no row goes on to a second line."""
        starts = [i for i, line in enumerate(lines) if line.split("│")[0].strip() == name]
        assert all(i + 1 == len(lines) or lines[i + 1].split("│")[0].strip() for i in starts), name
        return [re.findall(r"\d+\.\d+", lines[i]) for i in starts]

    for name, figures in results.items():
        summary, stages, rounds = cells(name)  # one row in each per-configuration table, on one line
        headline = (figures["unet_step_ms"], figures["total_ms"], figures["peak_rss_mb"])
        guidance = [f"{figures['recipe']['guidance']:g}"] if figures["recipe"]["guidance"] == 7.5 else []
        assert summary == [*guidance, *(f"{v:.1f}" for v in headline)], name  # the recipe's decimals, then these
        assert stages == [f"{figures['stages'][s]:.1f}" for s in bench.STAGES if s in figures["stages"]], name
        assert rounds == [f"{t / 1000:.1f}" for t in figures["round_totals_ms"]], name
    for pair, figures in relative.items():
        (shown,) = cells(pair)
        expected = [figures["unet_step"], figures["total"], figures["peak_rss"], *figures["total_by_round"]]
        assert shown == [f"{v:.2f}" for v in expected], pair


def test_a_bundle_off_the_engine_contract_is_refused(tiny_bundle, tmp_path):
    from runtime.bundle import Bundle
    from runtime.errors import BundleError

    bundle = shutil.copytree(tiny_bundle, tmp_path / "copy")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"]["unet"]["inputs"][0]["shape"][0] = 1  # a UNet exported without the guidance batch
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError,
        match=r"unet inputs are sample float32 \[1, 4, 8, 8\].*this runtime expects sample float32 \[2, 4, 8, 8\]",
    ) as caught:
        Bundle.open(bundle)
    assert "audiotoken-rt export" in caught.value.hint


def test_the_engine_contract_is_the_design_table():
    """docs/architecture.md's I/O table at SD 1.x sizes (D = 768, 512x512), written out independently of runtime.contract."""
    from runtime.contract import Dims, engine_contracts

    table = {
        "audio_encoder": ([("waveform", "float32", (1, 160000))], [("audio_token", "float32", (1, 768))]),
        "text_encoder": (
            [("input_ids", "int64", (1, 77)), ("audio_token", "float32", (1, 768))],
            [("text_embeddings", "float32", (1, 77, 768))],
        ),
        "unet": (
            [
                ("sample", "float32", (2, 4, 64, 64)),
                ("timestep", "float32", (1,)),
                ("encoder_hidden_states", "float32", (2, 77, 768)),
            ],
            [("noise_pred", "float32", (2, 4, 64, 64))],
        ),
        "vae_decoder": ([("latent", "float32", (1, 4, 64, 64))], [("image", "float32", (1, 3, 512, 512))]),
        "vae_encoder": ([("image", "float32", (1, 3, 512, 512))], [("latent", "float32", (1, 4, 64, 64))]),
    }
    contracts = engine_contracts(Dims(768, 512, 512))
    assert list(contracts) == list(table)
    for name, (inputs, outputs) in table.items():
        assert [(s.name, s.dtype, s.shape) for s in contracts[name].inputs] == inputs, name
        assert [(s.name, s.dtype, s.shape) for s in contracts[name].outputs] == outputs, name


def test_a_schema_1_manifest_reads_as_the_recipe_every_bundle_had(tiny_bundle, tmp_path):
    from runtime.bundle import Bundle, Recipe

    bundle = shutil.copytree(tiny_bundle, tmp_path / "old")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema_version"] = 1
    del manifest["recipe"]
    del manifest["token_slots"]
    for engine in manifest["engines"].values():
        del engine["variants"]
    text_inputs = manifest["engines"]["text_encoder"]["inputs"]  # one token, as every bundle had before schema 3
    text_inputs[1]["shape"] = [1, text_inputs[1]["shape"][-1]]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    opened = Bundle.open(bundle)
    assert opened.manifest.recipe == Recipe() and opened.manifest.recipe.unet_batches == (2,)
    assert opened.manifest.engines["unet"].variants == () and opened.manifest.token_slots == 1
