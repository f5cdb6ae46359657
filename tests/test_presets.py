"""The distillation presets (runtime/sampling.py PRESETS: LCM-LoRA, Hyper-SD, TCD, PCM) on the tiny random models.

Each preset is its model card's recipe (the published values, written out below from the cards). Exported with
``--fast --preset NAME`` and its LoRA's stand-in (make-random's, in the folder standing in for its hub repo, under its
published name and layout), a bundle records the preset's name and recipe and the LoRA's source, sha256 and scale;
its UNet engine equals the UNet with ``W + scale * alpha / rank * up @ down`` applied by hand from the file's own
tensors (kohya keys with alpha, or diffusers keys without); ``generate --fast`` draws the recipe (the PNG records
it); diffusers, drawing the card's recipe its own way (load_lora_weights + fuse_lora, the card's scheduler), draws the
same picture; the rebuild command the manifest gives rebuilds the same bundle. A LoRA that does not fit the UNet is
refused before any export work, and so are options that contradict each other; ``--fast`` on a bundle that lacks
what its preset needs names the export that makes one.

The presets drawn with TCD (hyper-1step, tcd) need the tcd scheduler (runtime/schedulers.py) to export and draw.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from audiotoken.random_models import LORA_STAND_INS, lora_stand_in, random_lora
from export.options import ExportOptions
from runtime.bundle import MANIFEST, Bundle, Manifest, read_manifest
from runtime.errors import BundleError, CheckpointError, ConfigError
from runtime.noise import STEP_NOISE, NoiseStream
from runtime.picture import read_png_metadata
from runtime.pipeline import GenerationOptions, Pipeline
from runtime.sampling import DEFAULT_PRESET, FAST, PRESETS, Sampling
from tests.support import export_tiny, fused_by_hand, psnr, relative_error, run_onnx, torch_unet, unet_feeds

# Each model card's recipe and source: hub repo, weights file, scheduler, steps, guidance (the cards' 0, no
# classifier-free guidance, is 1 here), eta, timestep spacing, LoRA scale.
CARDS = {
    # latent-consistency/lcm-lora-sdv1-5: LCMScheduler, 4 steps, guidance off, fuse_lora()
    "lcm": ("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors", "lcm", 4, 1.0, 0.0, None, 1.0),
    # ByteDance/Hyper-SD, SD 1.5: the 1-step unified LoRA with TCDScheduler, eta 1.0; the N-step ones with
    # DDIMScheduler, timestep_spacing="trailing"; guidance_scale=0, fuse_lora()
    "hyper-1step": ("ByteDance/Hyper-SD", "Hyper-SD15-1step-lora.safetensors", "tcd", 1, 1.0, 1.0, None, 1.0),
    "hyper-2step": ("ByteDance/Hyper-SD", "Hyper-SD15-2steps-lora.safetensors", "ddim", 2, 1.0, 0.0, "trailing", 1.0),
    "hyper-4step": ("ByteDance/Hyper-SD", "Hyper-SD15-4steps-lora.safetensors", "ddim", 4, 1.0, 0.0, "trailing", 1.0),
    "hyper-8step": ("ByteDance/Hyper-SD", "Hyper-SD15-8steps-lora.safetensors", "ddim", 8, 1.0, 0.0, "trailing", 1.0),
    # h1t/TCD-SD15-LoRA: TCDScheduler, 4 steps, guidance_scale=0, eta=0.3, fuse_lora()
    "tcd": ("h1t/TCD-SD15-LoRA", "pytorch_lora_weights.safetensors", "tcd", 4, 1.0, 0.3, None, 1.0),
    # wangfuyun/PCM_Weights sd15/, the small-CFG LoRAs: DDIM "trailing", eta 0, N steps, guidance 0
    "pcm-2step": ("wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_2step_converted.safetensors", "ddim", 2, 1.0, 0.0,
                  "trailing", 1.0),
    "pcm-4step": ("wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_4step_converted.safetensors", "ddim", 4, 1.0, 0.0,
                  "trailing", 1.0),
    "pcm-8step": ("wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_8step_converted.safetensors", "ddim", 8, 1.0, 0.0,
                  "trailing", 1.0),
    "pcm-16step": ("wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_16step_converted.safetensors", "ddim", 16, 1.0,
                   0.0, "trailing", 1.0),
}  # fmt: skip
PCM_TRAINED_ALPHA = 8.0  # peft's default lora_alpha, which train_pcm_lora_sd15.py's LoraConfig(r=64) leaves in place


def card_scheduler(name: str, config: dict):
    """The diffusers scheduler each card builds from the pipeline's scheduler config."""
    from diffusers import DDIMScheduler, LCMScheduler, TCDScheduler

    if name == "lcm":
        return LCMScheduler.from_config(config)
    if name in ("hyper-1step", "tcd"):
        return TCDScheduler.from_config(config)
    return DDIMScheduler.from_config(config, timestep_spacing="trailing")


def repo_folder(models: Path, name: str) -> Path:
    """The folder standing in for the preset's hub repo (what ``--lora`` is given)."""
    return models / LORA_STAND_INS[PRESETS[name].lora].folder


@pytest.fixture(scope="module")
def preset_bundle(tiny_models, tmp_path_factory):
    """``export --fast --preset NAME --lora <its repo's stand-in> --tiny-vae <the tiny TAESD>``, once per preset."""
    made = {}

    def bundle(name: str) -> Path:
        if name not in made:
            out = tmp_path_factory.mktemp(name) / "bundle"
            lora, taesd = str(repo_folder(tiny_models, name)), str(tiny_models / "taesd")
            made[name] = export_tiny(tiny_models, out, fast=True, preset=name, lora=lora, tiny_vae=taesd)
        return made[name]

    return bundle


def test_each_preset_is_its_model_cards_recipe():
    assert list(PRESETS) == list(CARDS) and FAST is PRESETS[DEFAULT_PRESET] == PRESETS["lcm"]
    for name, (repo, file, scheduler, steps, guidance, eta, spacing, scale) in CARDS.items():
        preset = PRESETS[name]
        assert (preset.lora, preset.lora_file, preset.lora_scale) == (repo, file, scale), name
        assert preset.sampling == Sampling(scheduler, steps, guidance, eta, spacing), name
        assert (preset.tiny_vae, preset.unet_batches) == ("madebyollin/taesd", (1,)), name  # guidance 1: batch 1
        assert preset.lora_alpha == (PCM_TRAINED_ALPHA if repo == "wangfuyun/PCM_Weights" else None), name
    assert [PRESETS[name].export_flags for name in ("lcm", "hyper-1step")] == ["--fast", "--fast --preset hyper-1step"]


def test_make_random_writes_each_loras_stand_in_under_its_published_name_and_layout(tiny_models):
    files = {name: lora_stand_in(tiny_models, name) for name in PRESETS}
    assert {name: file.relative_to(repo_folder(tiny_models, name)).as_posix() for name, file in files.items()} == {
        name: card[1] for name, card in CARDS.items()
    }
    assert all(file.is_file() for file in files.values())
    for name, file in files.items():
        tensors = load_file(file)
        kohya = all(key.startswith("lora_unet_") for key in tensors)
        diffusers = all(re.fullmatch(r"unet\..+\.lora\.(down|up)\.weight", key) for key in tensors)
        assert kohya != diffusers, name
        assert kohya == (name != "tcd"), name  # TCD's stand-in has diffusers' keys and no alpha; the others kohya's
        dtypes = {tensor.dtype for tensor in tensors.values()}
        assert dtypes == {torch.float32 if name.startswith("hyper-") else torch.float16}, name
    assert len({hashlib.sha256(file.read_bytes()).hexdigest() for file in files.values()}) == len(files)  # each its own


@pytest.mark.parametrize("name", list(CARDS))
def test_the_bundle_records_the_preset_and_its_unet_holds_the_lora(preset_bundle, tiny_models, name):
    from diffusers import UNet2DConditionModel

    bundle, preset = preset_bundle(name), PRESETS[name]
    file, repo = lora_stand_in(tiny_models, name), repo_folder(tiny_models, name)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    recipe = json.loads((bundle / MANIFEST).read_text())["recipe"]
    assert {key: recipe[key] for key in preset.sampling.to_json()} == preset.sampling.to_json()
    assert (recipe["preset"], recipe["decoder"], recipe["unet_batches"]) == (name, "taesd", [1])
    assert recipe["lora"] == {"source": str(repo), "sha256": digest, "scale": 1.0}
    manifest = read_manifest(bundle)
    assert [(s.ref, s.files) for s in manifest.sources if s.role == "lora"] == [(str(repo), {file.name: digest})]
    assert manifest.recipe.fast_preset() is preset

    feeds = unet_feeds(manifest, seed=3)
    (output,) = run_onnx(bundle / manifest.engines["unet"].file.path, feeds).values()
    unet = UNet2DConditionModel.from_pretrained(tiny_models / "sd", subfolder="unet").eval()
    expected = torch_unet(fused_by_hand(unet, load_file(file), 1.0), feeds)
    assert relative_error(output, expected) < 1e-4
    assert relative_error(output, torch_unet(unet, feeds)) > 1e-2  # the LoRA changed it


@pytest.mark.parametrize("name", list(CARDS))
def test_generate_fast_draws_the_presets_recipe(preset_bundle, clips, tmp_path, name):
    from audiotoken_rt.cli import app

    out = tmp_path / "out"
    args = ["generate", str(clips[0]), "--engines", str(preset_bundle(name)), "--out", str(out), "--fast"]
    result = CliRunner().invoke(app, [*args, "--seed", "4"])
    assert result.exit_code == 0, result.output
    meta = read_png_metadata(out / f"{clips[0].stem}.png")
    sampling = PRESETS[name].sampling
    assert (meta["scheduler"], meta["steps"], meta["guidance"], meta["eta"]) == (
        sampling.scheduler,
        str(sampling.steps),
        str(sampling.guidance),
        str(sampling.eta),
    )
    assert meta.get("timestep_spacing") == sampling.timestep_spacing


@pytest.mark.parametrize("name", ["hyper-1step", "hyper-2step", "tcd", "pcm-4step"])
def test_the_preset_picture_is_diffusers_drawing_the_cards_recipe(preset_bundle, tiny_models, clips, monkeypatch, name):
    """diffusers' own way: the LoRA file loaded by load_lora_weights and fused, AutoencoderTiny, the card's
    scheduler; a TCD step's fresh noise is the runtime's stream, fed to diffusers too."""
    import diffusers.schedulers.scheduling_tcd as tcd

    from audiotoken.pipeline import AudioTokenPipeline

    seed = 6
    stream = NoiseStream(seed, STEP_NOISE)

    def step_noise(shape, generator=None, device=None, dtype=None):
        return torch.from_numpy(stream.standard_normal(tuple(shape))).to(dtype)

    monkeypatch.setattr(tcd, "randn_tensor", step_noise)
    reference = AudioTokenPipeline.from_pretrained(
        tiny_models / "sd",
        tiny_models / "beats.pt",
        tiny_models / "embedder.bin",
        lora=lora_stand_in(tiny_models, name),
        tiny_vae=tiny_models / "taesd",
    )
    _, _, _, steps, _, eta, _, _ = CARDS[name]
    expected = reference(
        [clips[1]],
        seed=seed,
        num_inference_steps=steps,
        guidance_scale=0.0,  # the cards': no classifier-free guidance
        eta=eta,
        scheduler=card_scheduler(name, reference.sd.scheduler.config),
        progress=False,
    )[0]
    result = Pipeline.open(preset_bundle(name)).draw(clips[1], GenerationOptions(fast=True, seed=seed))
    assert result.timings.unet_calls == steps
    assert psnr(result.pictures[0], expected) >= 40


def test_the_rebuild_command_rebuilds_the_same_bundle(preset_bundle):
    from audiotoken_rt.cli import app

    bundle = preset_bundle("hyper-2step")
    words = shlex.split(read_manifest(bundle).rebuild_command(bundle))
    assert words[-1] == "--force" and "--preset" in words and words[words.index("--preset") + 1] == "hyper-2step"
    result = CliRunner().invoke(app, words[1:-1])  # without --force: kept when its key is the bundle's
    assert result.exit_code == 0, result.output
    assert f"kept {bundle}" in result.output


def test_a_lora_that_does_not_fit_is_refused_before_any_export_work(tiny_models, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    import export.builder

    def no_export(*args, **kwargs):
        raise AssertionError("an engine was exported")

    monkeypatch.setattr(export.builder, "export_engine", no_export)
    config = dict(UNet2DConditionModel.load_config(tiny_models / "sd", subfolder="unet"))
    torch.manual_seed(0)
    wider = UNet2DConditionModel.from_config({**config, "cross_attention_dim": 48})  # another text width
    (tmp_path / "hyper").mkdir()
    save_file(random_lora(wider, rank=4, alpha=2.0), tmp_path / "hyper" / PRESETS["hyper-2step"].lora_file)
    with pytest.raises(CheckpointError) as raised:
        export_tiny(
            tiny_models,
            tmp_path / "out",
            fast=True,
            preset="hyper-2step",
            lora=str(tmp_path / "hyper"),
            tiny_vae=str(tiny_models / "taesd"),
        )
    assert "does not fit the UNet" in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


def options(**given) -> ExportOptions:
    return ExportOptions(sd="sd", beats=Path("b.pt"), embedder=Path("e.bin"), out=Path("out"), **given)


def test_export_options_take_the_presets_sources_and_refuse_contradictions():
    hyper = options(fast=True, preset="hyper-1step").with_preset()
    assert (hyper.lora, hyper.preset, hyper.lora_scale, hyper.tiny_vae, hyper.unet_batch) == (
        "ByteDance/Hyper-SD",
        "hyper-1step",
        1.0,
        "madebyollin/taesd",
        "1",
    )
    own = options(preset="pcm-4step", lora="my-pcm", lora_scale=0.5).with_preset()  # no --fast: the LoRA alone
    assert (own.lora, own.preset, own.lora_scale, own.tiny_vae, own.unet_batch) == (
        "my-pcm",
        "pcm-4step",
        0.5,
        None,
        None,
    )
    old = options(lcm_lora="my-lcm").with_preset()  # --lcm-lora: --lora with the lcm preset
    assert (old.lora, old.lcm_lora, old.preset) == ("my-lcm", None, "lcm")
    refusals = {
        "--lcm-lora is --lora with --preset lcm, not --preset tcd": options(lcm_lora="x", preset="tcd"),
        "--lcm-lora and --lora both name a LoRA": options(lcm_lora="x", lora="y"),
        "--preset tcd: names the recipe of a fused LoRA, and none is asked for": options(preset="tcd"),
        "--preset 'turbo': expected one of lcm, hyper-1step": options(preset="turbo"),
    }
    for message, given in refusals.items():
        with pytest.raises(ConfigError, match=re.escape(message)) as raised:
            given.with_preset()
        assert "\n" not in str(raised.value)


def test_fast_on_a_bundle_lacking_what_its_preset_needs_names_the_export(preset_bundle, tmp_path, clips):
    copy = Path(shutil.copytree(preset_bundle("hyper-2step"), tmp_path / "full-vae"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["recipe"]["decoder"] = "sd-vae"  # as if exported with --lora --preset hyper-2step, without --fast
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        ConfigError, match="--fast needs a bundle with Hyper-SD 2-step LoRA fused, the tiny decoder"
    ) as raised:
        Pipeline.open(copy).draw(clips[0], GenerationOptions(fast=True))
    assert raised.value.hint == "export one with: audiotoken-rt export ... --fast --preset hyper-2step"
    assert Bundle.open(copy).manifest.recipe.fast_preset() is None


def test_a_schema_4_fast_bundle_reads_as_the_lcm_preset(fast_bundle, tmp_path):
    old = Path(shutil.copytree(fast_bundle, tmp_path / "schema4"))
    manifest = json.loads((old / MANIFEST).read_text())
    manifest["schema_version"] = 4
    del manifest["recipe"]["preset"]
    for source in manifest["sources"]:
        source["role"] = "lcm_lora" if source["role"] == "lora" else source["role"]
    (old / MANIFEST).write_text(json.dumps(manifest))
    read = Bundle.open(old).manifest
    assert (read.recipe.preset, read.recipe.fast_preset()) == ("lcm", FAST)
    words = shlex.split(read.rebuild_command(old))
    assert words[words.index("--lora") + 1 : words.index("--lora") + 4] == [manifest["recipe"]["lora"]["source"],
                                                                             "--preset", "lcm"]  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"preset": "turbo"}, "recipe.preset is 'turbo': expected one of lcm, hyper-1step"),
        ({"preset": None}, "recipe.preset is None: expected a preset's name with a LoRA, null without one"),
        ({"lora": None}, "recipe.preset is 'lcm': expected a preset's name with a LoRA, null without one"),
    ],
)
def test_a_manifests_preset_must_name_one_with_its_lora(fast_bundle, change, message):
    manifest = json.loads((fast_bundle / MANIFEST).read_text())
    manifest["recipe"].update(change)
    with pytest.raises(BundleError, match=re.escape(message)):
        Manifest.from_json(json.dumps(manifest))


def test_info_shows_the_preset(preset_bundle):
    from runtime.commands.info import recipe_rows

    rows = dict(recipe_rows(read_manifest(preset_bundle("pcm-4step"))))
    assert rows["preset"] == "pcm-4step: PCM 4-step LoRA, ddim, 4 steps, guidance 1, trailing spacing"
    assert rows["recipe"] == "ddim, 4 steps, guidance 1, trailing spacing (the defaults); --fast works"


def test_the_bundle_key_holds_the_preset(tiny_models):
    """The same LoRA file under two presets makes two bundles (their recipes differ), never one kept for the other."""
    from export.builder import bundle_key
    from export.networks import read_dims
    from export.sources import resolve_sources
    from runtime.contract import DEFAULT_TEMPLATE

    file = str(lora_stand_in(tiny_models, "pcm-2step"))
    keys = set()
    for name in ("pcm-2step", "pcm-4step"):
        sd, beats, embedder = str(tiny_models / "sd"), tiny_models / "beats.pt", tiny_models / "embedder.bin"
        sources = resolve_sources(sd, beats, embedder, file, 1.0, preset=PRESETS[name])
        keys.add(bundle_key(sources, read_dims(sources, None, None, (1,)), "fp32", DEFAULT_TEMPLATE))
    assert len(keys) == 2
