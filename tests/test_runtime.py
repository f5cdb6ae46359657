"""The torch-free runtime on a tiny bundle: tokenizer, backends A/B, the diffusers reference, the CLI and the API."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from runtime.backends import OnnxRuntimeBackend
from runtime.cli import app
from runtime.errors import ConfigError
from runtime.pipeline import GenerationOptions, Pipeline
from runtime.picture import read_png_metadata, save_png
from runtime.tokenizer import PromptTokenizer

STEPS = 4


def psnr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


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
    with pytest.raises(ConfigError, match="holds <\\*> 0 times; it needs it exactly once"):
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

    reference = AudioTokenPipeline.from_pretrained(tiny_models / "sd", tiny_models / "beats.pt", tiny_models / "embedder.bin")
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


def test_num_images_use_consecutive_seeds(pipeline, clips):
    result = pipeline.draw(clips[0], GenerationOptions(steps=2, seed=20, num_images=2))
    single = pipeline.generate(clips[0], GenerationOptions(steps=2, seed=21))[0]
    assert result.seeds == [20, 21]
    assert np.array_equal(np.asarray(result.pictures[1]), np.asarray(single))


def test_save_png_is_atomic_and_never_overwrites_silently(tmp_path):
    picture = Image.new("RGB", (8, 8), (200, 10, 10))
    path = save_png(picture, tmp_path / "a.png", {"seed": 4, "prompt": "a photo of <*>"})
    assert read_png_metadata(path) == {"seed": "4", "prompt": "a photo of <*>"}
    with pytest.raises(ConfigError, match="a.png: already exists"):
        save_png(Image.new("RGB", (8, 8)), path, {})
    assert np.asarray(Image.open(path))[0, 0].tolist() == [200, 10, 10]
    save_png(Image.new("RGB", (8, 8)), path, {}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary file left


def test_cli_generate_batch_keeps_going_and_refuses_to_overwrite(tiny_bundle, clips, tmp_path):
    runner = CliRunner()
    dash = tmp_path / "-dash.wav"
    shutil.copy(clips[0], dash)
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    out = tmp_path / "out"
    args = ["generate", "--engines", str(tiny_bundle), "--out", str(out), "--steps", "2", "--seed", "9", "--"]
    result = runner.invoke(app, [*args, str(dash), str(bad), str(clips[1])])
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["-dash.png", f"{clips[1].stem}.png"]
    assert "notes.wav: not a recognised audio file" in result.output and "1 of 3 clip(s) failed" in result.output
    meta = read_png_metadata(out / "-dash.png")
    assert meta["seed"] == "9" and meta["steps"] == "2" and meta["scheduler"] == "dpm++2m" and meta["clip"] == "-dash.wav"
    assert meta["bundle"] == json.loads((tiny_bundle / "manifest.json").read_text())["key"][:16]
    before = (out / "-dash.png").read_bytes()
    again = runner.invoke(app, [*args[:-3], "--seed", "10", "--", str(dash)])
    assert again.exit_code == 1 and "already exists" in again.output
    assert (out / "-dash.png").read_bytes() == before
    forced = runner.invoke(app, [*args[:-3], "--seed", "10", "--overwrite", "--num-images", "2", "--", str(dash)])
    assert forced.exit_code == 0, forced.output
    assert {"-dash-0.png", "-dash-1.png"} <= {p.name for p in out.iterdir()}


def test_cli_bad_options_are_one_line_errors(tiny_bundle, clips, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["generate", str(clips[0]), "--engines", str(tiny_bundle), "--out", str(tmp_path), "--scheduler", "magic"])
    assert result.exit_code == 1 and result.output.startswith("error: unknown scheduler 'magic'")
    result = runner.invoke(app, ["generate", str(clips[0]), "--engines", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no manifest.json" in result.output and "Traceback" not in result.output


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


def test_openvino_runs_unet_and_vae_in_bf16_and_draws_nearly_the_cpu_picture(tiny_bundle, clips):
    import onnxruntime as ort

    from runtime.backends import cpu_has_bf16

    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs the onnxruntime-openvino build of ONNX Runtime")
    pipeline = Pipeline.open(tiny_bundle, device="openvino")
    for engine in ("audio_encoder", "text_encoder", "unet", "vae_decoder"):
        provider, options = pipeline.backend.provider_chain(engine)[0]
        hint = json.loads(options["load_config"])["CPU"]["INFERENCE_PRECISION_HINT"]
        assert provider == "OpenVINOExecutionProvider"
        assert hint == ("bf16" if cpu_has_bf16() and engine != "audio_encoder" and engine != "text_encoder" else "f32"), engine
    options = GenerationOptions(steps=STEPS, seed=5)
    openvino = pipeline.generate(clips[0], options)[0]
    cpu = Pipeline.open(tiny_bundle).generate(clips[0], options)[0]
    assert psnr(openvino, cpu) >= 30


def test_bench_runs_the_torch_reference_beside_each_device():
    from runtime.bench import worker_device

    assert [worker_device("torch", d) for d in ("cpu", "openvino", "cuda", "tensorrt")] == ["cpu", "cpu", "cuda", "cuda"]
    assert [worker_device("onnxruntime", d) for d in ("cpu", "openvino")] == ["cpu", "openvino"]


def test_bench_reports_every_backend_with_ratios(tiny_bundle, clips, tmp_path):
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(clips[0]), "--engines", str(tiny_bundle), "--steps", "2", "--rounds", "1", "--json", str(report)])
    assert result.exit_code == 0, result.output
    figures = json.loads(report.read_text())
    assert set(figures["backends"]) == {"onnxruntime", "torch"}
    for backend in figures["backends"].values():
        assert set(backend["stages"]) == {"load_audio", "encode_audio", "encode_prompt", "denoise", "decode_latents"}
        assert backend["total_ms"] > 0 and backend["peak_rss_mb"] > 0 and backend["unet_step_ms"] > 0
    assert set(figures["ratios_vs_torch"]["onnxruntime"]) == {"unet_step", "total", "peak_rss"}


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


def test_bench_rounds_alternate_backends_and_keep_the_best(monkeypatch):
    import runtime.bench as bench

    calls = []
    figures = iter([(100, 5, 900), (300, 9, 800), (80, 7, 950), (310, 8, 700)])  # (total, step, rss) per call

    def fake_worker(bundle, name, *args):
        calls.append(name)
        total, step, rss = next(figures)
        return {"stages": {"denoise": total - 1}, "total_ms": total, "unet_step_ms": step, "open_ms": 1.0, "peak_rss_mb": rss}

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    best = bench.run_rounds(None, ["onnxruntime", "torch"], "cpu", None, 2, 1, "dpm++2m", rounds=2)
    assert calls == ["onnxruntime", "torch", "onnxruntime", "torch"]
    assert (best["onnxruntime"]["total_ms"], best["onnxruntime"]["unet_step_ms"], best["onnxruntime"]["peak_rss_mb"]) == (80, 5, 950)
    assert (best["torch"]["total_ms"], best["torch"]["stages"]["denoise"], best["torch"]["peak_rss_mb"]) == (300, 299, 800)
    assert bench.ratios(best)["onnxruntime"]["total"] == pytest.approx(80 / 300)
