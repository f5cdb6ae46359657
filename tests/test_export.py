"""Export: the five engines, run again on inputs the test chooses, match the source models in PyTorch within their
precision's bound (fp32, fp16, int8; TensorRT plans where a GPU has them), the manifest round-trips and catches
tampering, exports are idempotent and atomic, fp16 keeps its fp32 islands, and the bundle's tokenizer.json gives the
transformers ids with the ``tokenizers`` library alone. All on the tiny random models, on the CPU.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from audiotoken_rt.cli import app
from export.builder import export_bundle
from export.networks import Network
from export.onnx_file import save_onnx
from export.options import ExportOptions
from export.parity import check_parity, compare
from runtime.bundle import Manifest, OutputError, Parity, read_manifest, verify, write_manifest
from runtime.contract import ENGINE_NAMES, TOKEN_SLOTS, EngineContract, TensorSpec
from runtime.errors import BundleError, CheckpointError, ExportError
from tests.support import CLIPS, psnr, relative_error, run_onnx

CLIP = next(iter(sorted(CLIPS.glob("*.wav"))), None)  # a real clip for audio_encoder's validation, when present


def options_for(models: Path, out: Path, **changes) -> ExportOptions:
    base = ExportOptions(
        sd=str(models / "sd"), beats=models / "beats.pt", embedder=models / "embedder.bin", out=out, sample_clip=CLIP
    )
    return replace(base, **changes)


def export_quietly(options: ExportOptions):
    """Export with the progress and stage lines captured; returns (result, log text)."""
    log = io.StringIO()
    result = export_bundle(options, Console(file=log, width=200))
    return result, log.getvalue()


@pytest.fixture
def bundle(tiny_bundle) -> Path:
    """The fp32 tiny bundle (conftest builds it once per session with ``export_bundle``); tests must not change it."""
    return tiny_bundle


@pytest.fixture
def bundle_copy(bundle, tmp_path) -> Path:
    """A private copy of the bundle, for tests that damage or rebuild it."""
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


# Recomputation: each engine is run again with ONNX Runtime (or a TensorRT plan) on inputs the test chooses, other
# than the export's samples (noise seed 0, the first clip, the template, timestep 981), and compared with the source
# models in PyTorch, loaded here, not with the exporter's wrapper modules. The bounds are on max |engine - PyTorch|
# over max |PyTorch|, per engine precision. fp32 only sums in another order; fp16 keeps 11 significant bits; an int8
# UNet must also be off by more than a floor far above fp32 noise (~1e-6 here), or it was not quantized.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 1e-1}
FLOOR = {"int8": 1e-3}
PROMPT = "<*> echoing in a cathedral at night"  # not the template: other ids, and the placeholder at position 1
TIMESTEP = 457.25  # fractional: between the scheduler's integer timesteps (the export samples at 981)
SEEDS = {"text_encoder": 5, "unet": 7, "vae_decoder": 8, "vae_encoder": 9}  # the export draws with seed 0


class SourceModels:
    """PyTorch references built from the export's sources: the audio encoder from its two checkpoints, the stock CLIP
    text model with the audio token written into a resized token table (docs/method.md#the-token-and-the-prompt;
    tests/test_text.py checks that this equals the splice), the stock diffusers UNet and VAE. A model is loaded when its
    reference is first asked for and dropped after it; the reference outputs are kept, since every bundle of the same
    models shares them."""

    def __init__(self, models: Path, waveform: np.ndarray | None = None):
        self.models, self.sd, self.waveform = models, models / "sd", waveform  # waveform [160000], for audio_encoder
        self.outputs: dict[tuple, np.ndarray] = {}

    def feeds(self, name: str, manifest: Manifest) -> dict[str, np.ndarray]:
        """The test's inputs for engine ``name`` at the bundle's shapes."""
        shapes = {spec.name: tuple(spec.shape) for spec in manifest.engines[name].inputs}
        rng = np.random.default_rng(SEEDS.get(name, 0))
        normal = lambda key: rng.standard_normal(shapes[key]).astype(np.float32)  # noqa: E731
        if name == "audio_encoder":
            return {"waveform": self.waveform[None]}  # [1, 160000]
        if name == "text_encoder":
            from audiotoken.text import tokenize

            tokenizer, placeholder = self.tokenizer()
            assert placeholder == manifest.placeholder_id
            return {
                "input_ids": tokenize(tokenizer, [PROMPT]).numpy(),
                "audio_token": normal("audio_token"),
            }  # [1, 77], [1, D]
        if name == "unet":
            return {
                "sample": normal("sample"),
                "timestep": np.array([TIMESTEP], np.float32),
                "encoder_hidden_states": normal("encoder_hidden_states"),
            }
        if name == "vae_decoder":
            return {"latent": normal("latent") / np.float32(manifest.vae_scaling_factor)}
        return {"image": rng.uniform(-1, 1, shapes["image"]).astype(np.float32)}

    def tokenizer(self):
        """The source's CLIP tokenizer with ``<*>`` added, and the placeholder's id."""
        from transformers import CLIPTokenizer

        from audiotoken.text import add_placeholder

        tokenizer = CLIPTokenizer.from_pretrained(self.sd / "tokenizer")
        return tokenizer, add_placeholder(tokenizer)

    def output(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """PyTorch's output of the source model on ``feeds`` (the same feeds give the same, cached, array)."""
        key = (name, *((k, v.shape, v.tobytes()) for k, v in sorted(feeds.items())))
        if key not in self.outputs:
            with torch.no_grad():
                self.outputs[key] = self.compute(name, {k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
        return self.outputs[key]

    def compute(self, name: str, x: dict[str, torch.Tensor]) -> torch.Tensor:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        if name == "audio_encoder":
            from audiotoken.encoder import AudioEncoder

            return AudioEncoder.from_checkpoints(self.models / "beats.pt", self.models / "embedder.bin")(x["waveform"])
        if name == "text_encoder":
            from transformers import CLIPTextModel

            from audiotoken.text import slot_ids

            tokenizer, _ = self.tokenizer()
            rows = slot_ids(tokenizer)
            stock = CLIPTextModel.from_pretrained(self.sd / "text_encoder").eval()
            stock.resize_token_embeddings(max(rows) + 1, mean_resizing=False)
            for slot, token in enumerate(x["audio_token"][0]):  # [S, D]: each slot's token at its placeholder row
                stock.get_input_embeddings().weight[rows[slot]] = token
            return stock(x["input_ids"]).last_hidden_state  # [1, 77, D]
        if name == "unet":
            unet = UNet2DConditionModel.from_pretrained(self.sd, subfolder="unet").eval()
            return unet(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample
        vae = AutoencoderKL.from_pretrained(self.sd, subfolder="vae").eval()
        if name == "vae_decoder":
            return vae.decode(x["latent"]).sample  # [1, 3, H, W]
        return vae.encode(x["image"]).latent_dist.mean  # [1, 4, h, w]


def recomputed_error(bundle: Path, name: str, sources: SourceModels, run=None) -> float:
    """Engine ``name`` of ``bundle`` on the test's inputs, run with ONNX Runtime on the CPU (or ``run(feeds)``, which
    returns the outputs by name: a TensorRT plan), against the source model: max |engine - PyTorch| / max |PyTorch|."""
    manifest = read_manifest(bundle)
    feeds = sources.feeds(name, manifest)
    (output,) = (run or (lambda f: run_onnx(bundle / manifest.engines[name].file.path, f)))(feeds).values()
    return relative_error(output, sources.output(name, feeds))


def check_recomputed(bundle: Path, sources: SourceModels, names=ENGINE_NAMES) -> dict[str, float]:
    """Every engine in ``names`` recomputed (``recomputed_error``) and within the bounds of its precision; the manifest
    records that precision's tolerance, and an error of the magnitude recomputed here. Returns the errors by name."""
    manifest = read_manifest(bundle)
    errors = {}
    for name in names:
        engine = manifest.engines[name]
        tolerance = TOLERANCE[engine.precision]
        errors[name] = recomputed_error(bundle, name, sources)
        assert FLOOR.get(engine.precision, 0.0) <= errors[name] <= tolerance, (name, engine.precision, errors[name])
        assert engine.parity.tolerance == tolerance, (name, engine.parity)
        (recorded,) = engine.parity.outputs
        assert same_magnitude(recorded.max_rel, errors[name], tolerance / 100), (name, recorded, errors[name])
    return errors


def same_magnitude(recorded: float, recomputed: float, noise: float) -> bool:
    """The export's recorded error and the recomputed one (other inputs, same engine) within a factor of 10 of each
    other, or both below ``noise`` (fp32 errors are summation-order noise: 1e-7 to 2e-6 on the tiny models)."""
    return max(recorded, recomputed) <= 10 * max(min(recorded, recomputed), noise)


@pytest.fixture(scope="module")
def sources(tiny_models, clips) -> SourceModels:
    """The tiny models' PyTorch references; the audio encoder hears the second real clip (the exports take the first)."""
    from runtime.audio import load_audio

    return SourceModels(tiny_models, load_audio(clips[1]))


def test_every_engine_matches_pytorch_within_the_fp32_tolerance(bundle, sources):
    manifest = verify(bundle)
    assert tuple(manifest.engines) == ENGINE_NAMES
    assert {engine.precision for engine in manifest.engines.values()} == {"fp32"}
    check_recomputed(bundle, sources)


def test_engines_follow_the_io_contract(bundle):
    manifest = read_manifest(bundle)
    D, h, w = manifest.token_dim, manifest.height // 8, manifest.width // 8
    expected = {
        "audio_encoder": ({"waveform": [1, 160000]}, {"audio_token": [1, D]}),
        "text_encoder": ({"input_ids": [1, 77], "audio_token": [1, TOKEN_SLOTS, D]}, {"text_embeddings": [1, 77, D]}),
        "unet": (
            {"sample": [2, 4, h, w], "timestep": [1], "encoder_hidden_states": [2, 77, D]},
            {"noise_pred": [2, 4, h, w]},
        ),
        "vae_decoder": ({"latent": [1, 4, h, w]}, {"image": [1, 3, 8 * h, 8 * w]}),
        "vae_encoder": ({"image": [1, 3, 8 * h, 8 * w]}, {"latent": [1, 4, h, w]}),
    }
    for name, (inputs, outputs) in expected.items():
        session = ort.InferenceSession(
            str(bundle / manifest.engines[name].file.path), providers=["CPUExecutionProvider"]
        )
        assert {i.name: i.shape for i in session.get_inputs()} == inputs
        assert {o.name: o.shape for o in session.get_outputs()} == outputs
        types = {i.name: i.type for i in session.get_inputs()}
        assert types.pop("input_ids", "tensor(int64)") == "tensor(int64)"
        assert set(types.values()) == {"tensor(float)"}
        engine = manifest.engines[name]
        assert {t.name: list(t.shape) for t in engine.inputs} == inputs and {
            t.name: list(t.shape) for t in engine.outputs
        } == outputs
    assert (manifest.opset, manifest.placeholder, manifest.placeholder_id) == (17, "<*>", 49408)
    assert manifest.template == "a photo of <*>, 4k, high resolution"
    assert manifest.vae_scaling_factor == pytest.approx(0.18215) and manifest.prediction_type == "epsilon"
    assert manifest.scheduler_config["_class_name"] == "PNDMScheduler"


def test_manifest_round_trip(bundle, tmp_path):
    manifest = read_manifest(bundle)
    assert Manifest.from_json(manifest.to_json()) == manifest
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert manifest.bundle_id == manifest.key[:16]


def test_a_tampered_engine_is_refused_by_verify_and_info(bundle_copy):
    path = bundle_copy / "unet.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"unet\.onnx has sha256") as caught:
        verify(bundle_copy)
    assert "audiotoken-rt export" in caught.value.hint and "--force" in caught.value.hint

    result = CliRunner().invoke(app, ["info", str(bundle_copy)])
    assert result.exit_code != 0
    assert "unet.onnx" in result.output and "error:" in result.output


def test_a_missing_file_is_named(bundle_copy):
    (bundle_copy / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer/tokenizer\.json is missing"):
        verify(bundle_copy)


def test_info_prints_every_engine_and_checks_hashes(bundle):
    result = CliRunner().invoke(app, ["info", str(bundle)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ENGINE_NAMES:
        assert name in result.output
    assert "files match their sha256" in result.output
    assert "CPUExecutionProvider" in result.output and "tensorrt" in result.output  # the device this runs on


def test_a_second_export_reuses_the_first(bundle, tiny_models, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in bundle.rglob("*")}

    def no_export(*args, **kwargs):
        raise AssertionError("an up-to-date bundle was exported again")

    monkeypatch.setattr("export.builder.trace_to_onnx", no_export)
    result, log = export_quietly(options_for(tiny_models, bundle))
    assert result.reused and "is up to date" in log
    assert result.manifest == read_manifest(bundle)
    assert {p: p.stat().st_mtime_ns for p in bundle.rglob("*")} == before

    # the command line says so too
    args = [
        "export",
        "--sd",
        str(tiny_models / "sd"),
        "--beats",
        str(tiny_models / "beats.pt"),
        "--embedder",
        str(tiny_models / "embedder.bin"),
        "--out",
        str(bundle),
    ]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 0, cli.output
    assert "up to date" in cli.output and "kept" in cli.output


def test_other_options_without_force_are_an_error(bundle, tiny_models):
    with pytest.raises(BundleError, match="other sources, options or code") as caught:
        export_quietly(options_for(tiny_models, bundle, height=128))
    assert "--force" in caught.value.hint


def test_a_bundle_exported_by_other_code_is_not_up_to_date_and_update_rebuilds_it(
    bundle_copy, tiny_models, tmp_path, monkeypatch
):
    import audiotoken
    import export
    from export.builder import TRACED_CODE, code_digest

    copies = tuple(tmp_path / Path(package.__file__).parent.name for package in (export, audiotoken))
    for package, copy in zip(TRACED_CODE, copies, strict=True):
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_digest(copies) == code_digest(TRACED_CODE)  # the same code wherever it lies
    with (copies[0] / "int8.py").open("a") as source:
        source.write("# an upgraded exporter\n")
    assert code_digest(copies) != code_digest(TRACED_CODE)

    old = read_manifest(bundle_copy)
    monkeypatch.setattr("export.builder.TRACED_CODE", copies)
    with pytest.raises(BundleError, match="other sources, options or code") as caught:
        export_quietly(options_for(tiny_models, bundle_copy))
    assert "--update" in caught.value.hint
    assert read_manifest(bundle_copy) == old  # nothing touched

    rebuilt, log = export_quietly(options_for(tiny_models, bundle_copy, update=True))
    assert not rebuilt.reused and "export unet" in log and rebuilt.manifest.key != old.key
    verify(bundle_copy)
    assert export_quietly(options_for(tiny_models, bundle_copy, update=True))[0].reused  # now it is up to date


def test_update_does_not_replace_what_is_not_a_bundle(tiny_models, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not a bundle")
    with pytest.raises(BundleError, match="holds no readable bundle"):
        export_quietly(options_for(tiny_models, out, update=True))
    assert (out / "holiday.jpg").read_bytes() == b"not a bundle"


def test_force_rebuilds(bundle_copy, tiny_models):
    old = read_manifest(bundle_copy)
    old_mtime = (bundle_copy / "unet.onnx").stat().st_mtime_ns
    result, log = export_quietly(options_for(tiny_models, bundle_copy, force=True))
    assert not result.reused and "export unet" in log
    assert (bundle_copy / "unet.onnx").stat().st_mtime_ns > old_mtime
    assert result.manifest.key == old.key  # same inputs, same key
    verify(bundle_copy)
    assert not [p for p in bundle_copy.parent.iterdir() if p.name.startswith(".")]  # no staging or old folder left


def test_an_interrupted_export_leaves_no_bundle_and_no_temporary_folder(tiny_models, tmp_path, monkeypatch):
    import export.builder

    real = export.builder.trace_to_onnx

    def fail_on_unet(module, args, network, scratch):
        if network.name == "unet":
            raise KeyboardInterrupt  # what Ctrl-C does halfway through
        return real(module, args, network, scratch)

    monkeypatch.setattr(export.builder, "trace_to_onnx", fail_on_unet)
    out = tmp_path / "engines" / "tiny"
    with pytest.raises(KeyboardInterrupt):
        export_quietly(options_for(tiny_models, out))
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_fp16_export_keeps_its_fp32_islands_and_tolerance(tiny_models, tmp_path, sources):
    result, _ = export_quietly(options_for(tiny_models, tmp_path / "tiny16", precision="fp16"))
    manifest = verify(result.folder)
    assert manifest.precision == "fp16"
    assert manifest.engines["audio_encoder"].parity.sample == (f"clip {CLIP.name}" if CLIP else "noise seed 0")
    assert {engine.precision for engine in manifest.engines.values()} == {"fp16"}
    check_recomputed(result.folder, sources)  # the second clip, another prompt, timestep 457.25: within 2e-2
    # the I/O contract stays float32, and the fbank (frame power ~1e13) never passes through fp16
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(result.folder / "audio_encoder.onnx"))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    assert types["waveform"] == types["audio_token"] == onnx.TensorProto.FLOAT
    fbank = [n for n in graph.node if n.name.startswith("/fbank/") and n.op_type != "Constant"]
    assert {n.op_type for n in fbank} >= {"Conv", "MatMul", "Log"}
    assert all(types[o] == onnx.TensorProto.FLOAT for n in fbank for o in n.output)
    assert any(
        types.get(o) == onnx.TensorProto.FLOAT16 for n in graph.node if n.name.startswith("/beats/") for o in n.output
    )


def test_tokenizer_json_gives_the_transformers_ids(bundle, tiny_models):
    from tokenizers import Tokenizer

    from audiotoken.text import add_placeholder, tokenize
    from runtime.contract import DEFAULT_TEMPLATE

    manifest = read_manifest(bundle)
    fast = Tokenizer.from_file(str(bundle / manifest.tokenizer / "tokenizer.json"))
    assert fast.token_to_id("<*>") == manifest.placeholder_id == 49408

    from transformers import CLIPTokenizer

    reference = CLIPTokenizer.from_pretrained(tiny_models / "sd" / "tokenizer")
    add_placeholder(reference)
    for prompt in (DEFAULT_TEMPLATE, "", "A Dog barking, at NIGHT <*>!"):
        ids = fast.encode(prompt).ids  # no padding in the file: the runtime pads
        padded = ids + [reference.pad_token_id] * (77 - len(ids))
        assert padded == tokenize(reference, [prompt])[0].tolist(), prompt
    assert fast.encode(DEFAULT_TEMPLATE).ids.index(manifest.placeholder_id) == 4


def test_every_engine_keeps_its_weights_in_one_external_data_file(bundle, tmp_path):
    manifest = verify(bundle)
    for name, engine in manifest.engines.items():
        assert engine.data.path == f"{name}.onnx.data" and engine.data.size > engine.file.size
    file, data = save_onnx(onnx.load(str(bundle / "vae_encoder.onnx")), tmp_path, "vae_encoder")
    assert (file, data) == ("vae_encoder.onnx", "vae_encoder.onnx.data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae_encoder.onnx", "vae_encoder.onnx.data"]
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": image})[0]

    np.testing.assert_array_equal(run(tmp_path / file), run(bundle / "vae_encoder.onnx"))


def test_parity_beyond_tolerance_or_off_shape_is_refused():
    contract = EngineContract("unet", (), (TensorSpec("noise_pred", "float32", (1, 2)),))
    net = Network(contract, build=lambda: None, sample=lambda: (), sample_note="")
    beyond = Parity("onnxruntime", "sample", 1e-4, (OutputError("noise_pred", 0.5, 0.2),))
    with pytest.raises(ExportError, match="unet: output noise_pred differs from PyTorch by 0.2 of its scale") as caught:
        check_parity(net, beyond, allow=False)
    assert "--allow-parity-error" in caught.value.hint
    check_parity(net, beyond, allow=True)  # kept, and the error stays on record
    (nan,) = compare(net, [np.array([[np.nan, 0.0]], np.float32)], (np.ones((1, 2), np.float32),))
    assert nan.max_rel == float("inf")
    with pytest.raises(ExportError, match=r"output noise_pred has shape \[1, 3\] .* the contract is \[1, 2\]"):
        compare(net, [np.zeros((1, 3), np.float32)], (np.zeros((1, 2), np.float32),))


def test_bad_sources_are_named(tiny_models, tmp_path):
    with pytest.raises(CheckpointError, match="not a diffusers folder, and not a hub id"):
        export_quietly(options_for(tiny_models, tmp_path / "x", sd=str(tmp_path / "no" / "such" / "folder")))
    with pytest.raises(CheckpointError, match="BEATs checkpoint not found"):
        export_quietly(options_for(tiny_models, tmp_path / "x", beats=tmp_path / "missing.pt"))


@pytest.mark.optional  # skips where TensorRT is installed
def test_tensorrt_is_asked_for_before_the_long_export(tiny_models, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ExportError, match="TensorRT is not installed") as caught:
            export_quietly(options_for(tiny_models, tmp_path / "x", tensorrt=True))
        assert "trt" in caught.value.hint
        assert not (tmp_path / "x").exists()
    else:
        pytest.skip("TensorRT is installed here: the gpu test covers --tensorrt")


@pytest.mark.gpu
def test_tensorrt_plans_match_pytorch(bundle_copy, tiny_models, sources):
    pytest.importorskip("tensorrt")
    from runtime.tensorrt import Engine as Plan

    result, _ = export_quietly(options_for(tiny_models, bundle_copy, tensorrt=True))
    assert result.reused
    manifest = verify(bundle_copy)
    tolerance = TOLERANCE[manifest.precision]  # strongly typed: a plan computes in the precisions its ONNX file holds
    for name, engine in manifest.engines.items():
        assert len(engine.plans) == 1 and engine.plans[0].file.path.startswith(f"{name}.")
        assert engine.plans[0].parity.tolerance == tolerance, (name, engine.plans[0].parity)
        with Plan(bundle_copy / engine.plans[0].file.path) as plan:  # the runtime's own class, as the backend runs it
            error = recomputed_error(bundle_copy, name, sources, run=plan.infer)
        assert error <= tolerance, (name, error)


@pytest.mark.slow
def test_full_size_sd15_bundles_export(tmp_path):
    """The real SD 1.5 / BEATs iter3 sizes (random weights): a 3.4 GB UNet goes to one external data file; its
    int8 form (every conv shape and stride of SD 1.5) stays within tolerance in about a quarter of the bytes."""
    from audiotoken.random_models import make_random

    models = make_random(tmp_path / "sd15", arch="sd15")
    result, _ = export_quietly(options_for(models, tmp_path / "bundle", height=256, width=256))
    manifest = verify(result.folder)
    assert manifest.token_dim == 768
    assert manifest.engines["unet"].data is not None and manifest.engines["unet"].data.size > 2**31
    sources = SourceModels(models)  # no clip: the audio encoder is not recomputed here
    check_recomputed(result.folder, sources, names=("unet", "vae_decoder"))  # the biggest graph, the largest fp32 error
    shutil.rmtree(result.folder)  # disk: one 3.4 GB UNet at a time

    int8, _ = export_quietly(options_for(models, tmp_path / "bundle8", height=256, width=256, precision="int8"))
    unet = verify(int8.folder).engines["unet"]
    assert unet.precision == "int8"
    check_recomputed(int8.folder, sources, names=("unet",))  # the same inputs: PyTorch's output is reused
    assert unet.data.size < manifest.engines["unet"].data.size / 3


@pytest.fixture(scope="module")
def int8_bundle(tiny_models, tmp_path_factory) -> Path:
    return export_quietly(options_for(tiny_models, tmp_path_factory.mktemp("int8") / "tiny8", precision="int8"))[
        0
    ].folder


def weight_matmuls(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's MatMuls by a weight (an initializer or a Constant): its linear layers."""
    weights = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def test_int8_export_quantizes_the_linear_layers_and_convolutions_of_the_unet_and_beats(int8_bundle, bundle, sources):
    manifest = verify(int8_bundle)
    assert manifest.precision == "int8"
    assert {name: engine.precision for name, engine in manifest.engines.items()} == {
        name: "int8" if name in ("unet", "audio_encoder") else "fp32" for name in ENGINE_NAMES
    }
    errors = check_recomputed(int8_bundle, sources)  # UNet and audio encoder within 1e-1 but beyond 1e-3; others 1e-4
    # really quantized: their errors are those of 8-bit weights, far above the fp32 engines' summation-order noise
    for name in ("unet", "audio_encoder"):
        assert errors[name] > 100 * recomputed_error(bundle, name, sources), name

    # in the audio encoder, every weight MatMul of BEATs' transformer is int8; the fbank, the patch embedding that
    # reads it and the embedder that writes the token keep their fp32 ops
    plain_audio = onnx.load(str(bundle / "audio_encoder.onnx"), load_external_data=False).graph
    audio = onnx.load(str(int8_bundle / "audio_encoder.onnx"), load_external_data=False).graph
    beats_matmuls = [n.name for n in weight_matmuls(plain_audio) if "/beats/" in n.name]
    integer = [n.name for n in audio.node if n.op_type == "MatMulInteger"]
    assert len(beats_matmuls) > 12 and len(integer) == len(beats_matmuls)
    assert all(name.startswith("/beats/") and "/patch_embedding/" not in name for name in integer)
    for scope in ("/fbank/", "/beats/patch_embedding/", "/embedder/"):
        ops = [sorted(n.op_type for n in g.node if n.name.startswith(scope) and n.op_type != "Constant")
               for g in (plain_audio, audio)]  # fmt: skip
        assert ops[0] and ops[1] == ops[0], scope

    graph = onnx.load(str(bundle / "unet.onnx"), load_external_data=False).graph
    unet_matmuls = len(weight_matmuls(graph))
    int8_graph = onnx.load(str(int8_bundle / "unet.onnx"), load_external_data=False).graph
    fp32_ops, int8_ops = [n.op_type for n in graph.node], [n.op_type for n in int8_graph.node]
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    assert unet_matmuls > 0 and len(convs) > 2
    # every conv but conv_in and conv_out becomes an int8 GEMM, beside the weight MatMuls
    assert int8_ops.count("MatMulInteger") == unet_matmuls + len(convs) - 2
    assert [n.name for n in int8_graph.node if n.op_type == "Conv"] == ["/unet/conv_in/Conv", "/unet/conv_out/Conv"]
    # each attention is one fused fp32 node (its two score MatMuls and its Softmax gone); the Gemms (timestep path)
    # stay fp32 too, which the quantizer rewrites as MatMul + Add
    attentions = fp32_ops.count("Softmax")
    assert attentions > 0 and int8_ops.count("MultiHeadAttention") == attentions and "Softmax" not in int8_ops
    assert int8_ops.count("MatMul") == fp32_ops.count("MatMul") - unet_matmuls - 2 * attentions + fp32_ops.count("Gemm")
    assert int8_ops.count("LayerNormalization") == fp32_ops.count("LayerNormalization")
    assert (int8_bundle / "unet.onnx.data").stat().st_size < (bundle / "unet.onnx.data").stat().st_size
    # no scratch left; the int8 UNet is fused outright, so it has no fused variant beside it
    assert sorted(p.name for p in int8_bundle.iterdir()) == sorted(
        p.name for p in bundle.iterdir() if p.name != "unet.fused.onnx"
    )
    shown = CliRunner().invoke(app, ["info", str(int8_bundle)], env={"COLUMNS": "200"}).output.splitlines()
    cells = [line.replace("│", " ").split()[:2] for line in shown]
    assert [c for c in cells if c[:1] in (["unet"], ["vae_decoder"])] == [["unet", "int8"], ["vae_decoder", "fp32"]]


def test_the_unet_is_traced_with_each_geglu_as_two_projections(bundle, tiny_models):
    """The feed-forward's GEGLU computes diffusers' own (one projection, chunked) from two half projections, so the
    graph slices no product apart; the bundle's UNet has two weight MatMuls and no Slice in each GEGLU."""
    from diffusers.models.activations import GEGLU

    from export.networks import split_geglus

    torch.manual_seed(0)
    geglu = GEGLU(24, 40).eval()
    x = torch.randn(2, 7, 24)  # [B, T, K]
    with torch.no_grad():
        expected = geglu(x)  # [B, T, 40]
        split = split_geglus(torch.nn.Sequential(geglu))
        assert type(split[0]).__name__ == "SplitGEGLU"
        torch.testing.assert_close(split(x), expected, rtol=1e-6, atol=1e-6)

    graph = onnx.load(str(bundle / "unet.onnx"), load_external_data=False).graph
    geglu_nodes = [n for n in graph.node if "/ff/net.0/" in n.name]
    feed_forwards = {n.name.split("/ff/")[0] for n in geglu_nodes}
    assert feed_forwards and not [n for n in geglu_nodes if n.op_type in ("Slice", "Split")]
    assert sum(n.op_type == "MatMul" for n in geglu_nodes) == 2 * len(feed_forwards)


def test_the_fp32_unet_has_a_fused_attention_variant_over_the_same_weights(bundle, tiny_models):
    from runtime.pipeline import Pipeline

    manifest = read_manifest(bundle)
    (variant,) = manifest.engines["unet"].variants
    assert variant.file.path == "unet.fused.onnx" and variant.devices == ("cpu", "cuda")
    graph = onnx.load(str(bundle / variant.file.path), load_external_data=False).graph
    plain = onnx.load(str(bundle / "unet.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert (
        ops.count("MultiHeadAttention") == [n.op_type for n in plain.node].count("Softmax") > 0 and "Softmax" not in ops
    )
    locations = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"unet.onnx.data"}  # the variant reads the engine's own weights file: no second copy
    # the runtime runs it on the CPU, and it matches the source UNet in PyTorch like the plain graph
    assert Pipeline.open(bundle).backend.session("unet")._model_path.endswith("unet.fused.onnx")
    sources = SourceModels(tiny_models)
    session = ort.InferenceSession(str(bundle / variant.file.path), providers=["CPUExecutionProvider"])
    error = recomputed_error(
        bundle, "unet", sources, run=lambda feeds: dict(zip(["noise_pred"], session.run(None, feeds), strict=True))
    )
    assert error <= 1e-4


def test_int8_bundle_draws_nearly_the_fp32_picture(int8_bundle, bundle, clips):
    from runtime.pipeline import GenerationOptions, Pipeline

    options = GenerationOptions(steps=4, seed=3)
    int8 = Pipeline.open(int8_bundle).generate(clips[0], options)[0]
    fp32 = Pipeline.open(bundle).generate(clips[0], options)[0]
    assert 30 <= psnr(int8, fp32) < float("inf")


def test_int8_is_refused_where_it_cannot_run(int8_bundle, tiny_models, tmp_path):
    from runtime.backends import OnnxRuntimeBackend
    from runtime.bundle import Bundle
    from runtime.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"its int8 engines \(audio_encoder, unet\) are for ONNX Runtime's CPU provider; they cannot run on --device cuda",
    ):
        OnnxRuntimeBackend(Bundle.open(int8_bundle), device="cuda")
    with pytest.raises(ConfigError, match="--precision int8 is for CPUs"):
        export_quietly(options_for(tiny_models, tmp_path / "trt8", precision="int8", tensorrt=True))
    assert not (tmp_path / "trt8").exists()


@pytest.mark.optional  # needs the onnxruntime-openvino build (just setup-openvino), which CI does not install
def test_an_int8_bundle_on_openvino_keeps_its_int8_engines_on_the_cpu_provider(int8_bundle, clips):
    """--device openvino with an int8 bundle: its autoencoder on OpenVINO, its int8 engines (as the manifest says) and
    the text encoder on ONNX Runtime's CPU provider, and nearly the CPU's picture."""
    from runtime.pipeline import GenerationOptions, Pipeline

    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs the onnxruntime-openvino build of ONNX Runtime")
    pipeline = Pipeline.open(int8_bundle, device="openvino")
    options = GenerationOptions(steps=2, seed=5)
    openvino = pipeline.generate(clips[0], options)[0]
    precisions = {name: engine.precision for name, engine in read_manifest(int8_bundle).engines.items()}
    assert {"unet": "int8", "audio_encoder": "int8", "text_encoder": "fp32", "vae_decoder": "fp32"}.items() <= (
        precisions.items()
    )
    providers = {name: session.get_providers()[0] for name, session in pipeline.backend.sessions.items()}
    assert providers == {
        "audio_encoder": "CPUExecutionProvider",
        "text_encoder": "CPUExecutionProvider",
        "unet": "CPUExecutionProvider",
        "vae_decoder": "OpenVINOExecutionProvider",
    }
    cpu = Pipeline.open(int8_bundle).generate(clips[0], options)[0]
    assert psnr(openvino, cpu) >= 30
