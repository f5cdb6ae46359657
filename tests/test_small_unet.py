"""A distilled small UNet in place of Stable Diffusion's (``export --unet``, BK-SDM): make-random's stand-in has
BK-SDM-Tiny's published configuration; ``distilled_from`` gives BK-SDM's published copy table and the layers
Segmind's block removal keeps; a bundle exported with the tiny stand-in has a UNet engine equal to the small UNet in
PyTorch, smaller than the SD's own, records the UNet's source and sha256, and draws; a UNet of other conditioning or
a LoRA that does not fit it is one line naming it, before any export work.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from audiotoken.random_models import (
    ARCHITECTURES,
    bk_sdm_tiny_config,
    build_stable_diffusion,
    kohya_name,
    lora_targets,
    write_clip_tokenizer,
)
from export.builder import export_bundle
from export.options import ExportOptions
from export.small_unet import distilled_from
from runtime.bundle import read_manifest, verify
from runtime.errors import CheckpointError
from runtime.sampling import LORA_WEIGHTS_NAME
from tests.support import relative_error, run_onnx, torch_unet, unet_feeds

# nota-ai/bk-sdm-tiny's UNet: BK-SDM's src/unet_config/bk_tiny/config.json (the BK-SDM code), every
# key but _class_name and _diffusers_version
BK_SDM_TINY = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 768,
    "cross_attention_norm": None,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": None,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": None,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 64,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": False,
}
# BK-SDM-Base and -Small: where their bk_base and bk_small configs differ from SD 1.4's UNet
BK_SDM_BASE = {"layers_per_block": 1}
BK_SDM_SMALL = {"layers_per_block": 1, "mid_block_type": None}
# BK-SDM's copy table (copy_weight_from_teacher in its src/kd_train_text_to_image.py): a small-UNet prefix -> the SD
# 1.4 prefix its weights start from; every other weight starts from the SD weight of its own name
COPIED_FROM = {
    "base": {
        "up_blocks.0.resnets.1.": "up_blocks.0.resnets.2.",
        "up_blocks.1.resnets.1.": "up_blocks.1.resnets.2.",
        "up_blocks.1.attentions.1.": "up_blocks.1.attentions.2.",
        "up_blocks.2.resnets.1.": "up_blocks.2.resnets.2.",
        "up_blocks.2.attentions.1.": "up_blocks.2.attentions.2.",
        "up_blocks.3.resnets.1.": "up_blocks.3.resnets.2.",
        "up_blocks.3.attentions.1.": "up_blocks.3.attentions.2.",
    },
    "tiny": {
        "up_blocks.0.resnets.0.": "up_blocks.1.resnets.0.",
        "up_blocks.0.attentions.0.": "up_blocks.1.attentions.0.",
        "up_blocks.0.resnets.1.": "up_blocks.1.resnets.2.",
        "up_blocks.0.attentions.1.": "up_blocks.1.attentions.2.",
        "up_blocks.0.upsamplers.": "up_blocks.1.upsamplers.",
        "up_blocks.1.resnets.0.": "up_blocks.2.resnets.0.",
        "up_blocks.1.attentions.0.": "up_blocks.2.attentions.0.",
        "up_blocks.1.resnets.1.": "up_blocks.2.resnets.2.",
        "up_blocks.1.attentions.1.": "up_blocks.2.attentions.2.",
        "up_blocks.1.upsamplers.": "up_blocks.2.upsamplers.",
        "up_blocks.2.resnets.0.": "up_blocks.3.resnets.0.",
        "up_blocks.2.attentions.0.": "up_blocks.3.attentions.0.",
        "up_blocks.2.resnets.1.": "up_blocks.3.resnets.2.",
        "up_blocks.2.attentions.1.": "up_blocks.3.attentions.2.",
    },
}
COPIED_FROM["small"] = COPIED_FROM["base"]


@pytest.fixture(scope="module")
def sd15_unet_config(tmp_path_factory) -> dict:
    """The UNet config of make-random's sd15 Stable Diffusion (SD 1.4's and 1.5's), built without weights."""
    folder = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(folder)
    with torch.device("meta"):
        return dict(build_stable_diffusion(ARCHITECTURES["sd15"], folder).unet.config)


def meta_unet(config: dict):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


def public(config: dict) -> dict:
    """A config as JSON holds it, without diffusers' private keys."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if not k.startswith("_")}


def test_the_sd15_stand_in_has_bk_sdm_tiny_published_configuration(sd15_unet_config):
    config = public(bk_sdm_tiny_config(sd15_unet_config))
    assert {key: config.get(key) for key in BK_SDM_TINY} == BK_SDM_TINY
    small, sd = meta_unet(config), meta_unet(sd15_unet_config)
    assert small.mid_block is None and len(small.down_blocks) == 3
    count = lambda unet: sum(p.numel() for p in unet.parameters())  # noqa: E731
    assert count(small) == count(meta_unet(BK_SDM_TINY))  # 323.4 M, of SD's 859.5 M
    assert count(sd) == 859_520_964


def test_make_random_writes_the_small_unet_beside_the_sd(tiny_models):
    from diffusers import UNet2DConditionModel

    folder = tiny_models / "bk-sdm-tiny" / "unet"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    written = json.loads((folder / "config.json").read_text())
    sd = json.loads((tiny_models / "sd" / "unet" / "config.json").read_text())
    assert written["_class_name"] == "UNet2DConditionModel"
    assert public(written) == public(bk_sdm_tiny_config(sd))
    small = UNet2DConditionModel.from_pretrained(folder)
    own = UNet2DConditionModel.from_pretrained(tiny_models / "sd", subfolder="unet")
    assert small.mid_block is None and sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in own.parameters()
    )


@pytest.mark.slow
def test_make_random_sd15_writes_bk_sdm_tiny(tmp_path):
    from audiotoken.random_models import make_random

    models = make_random(tmp_path / "sd15", arch="sd15")
    written = json.loads((models / "bk-sdm-tiny" / "unet" / "config.json").read_text())
    assert {key: written.get(key) for key in BK_SDM_TINY} == BK_SDM_TINY


@pytest.mark.parametrize("variant", ["base", "small", "tiny"])
def test_distilled_from_gives_bk_sdm_copy_table(sd15_unet_config, variant):
    changes = {"base": BK_SDM_BASE, "small": BK_SDM_SMALL, "tiny": BK_SDM_TINY}[variant]
    config = {**public(sd15_unet_config), **changes}
    small, sd = meta_unet(config), dict(meta_unet(sd15_unet_config).state_dict())
    table = COPIED_FROM[variant]
    for key, weight in small.state_dict().items():
        prefix = next((p for p in table if key.startswith(p)), None)
        published = key if prefix is None else table[prefix] + key.removeprefix(prefix)
        assert distilled_from(key, config, sd15_unet_config) == published, key
        assert sd[published].shape == weight.shape, key


@pytest.mark.parametrize("level", ["sd_small", "sd_tiny"])
def test_distilled_from_gives_the_layers_segmind_keeps(sd15_unet_config, level):
    """Segmind's ``prepare_unet`` (distill-sd, distill_training.py) removes blocks from SD's UNet
    in place; done here on a weightless SD UNet, each weight left is the SD weight ``distilled_from`` names."""
    unet = meta_unet(sd15_unet_config)
    before = dict(unet.named_parameters())
    if level == "sd_tiny":
        unet.mid_block = None
    for i in range(3):
        del unet.down_blocks[i].resnets._modules["1"], unet.down_blocks[i].attentions._modules["1"]
    if level == "sd_tiny":
        del unet.down_blocks._modules["3"]
        unet.down_blocks[2].downsamplers = None
    else:
        del unet.down_blocks[3].resnets._modules["1"]
    unet.up_blocks[0].resnets._modules["1"] = unet.up_blocks[0].resnets._modules.pop("2")
    for i in range(1, 4):
        for pairs in (unet.up_blocks[i].resnets, unet.up_blocks[i].attentions):
            pairs._modules["1"] = pairs._modules.pop("2")
    if level == "sd_tiny":
        for i in range(3):
            unet.up_blocks._modules[str(i)] = unet.up_blocks._modules[str(i + 1)]
        del unet.up_blocks._modules["3"]
    config = {**public(sd15_unet_config), **(BK_SDM_TINY if level == "sd_tiny" else BK_SDM_BASE)}
    after = dict(unet.named_parameters())
    assert set(after) == set(dict(meta_unet(config).named_parameters()))  # the architecture of that config
    assert all(after[name] is before[distilled_from(name, config, sd15_unet_config)] for name in after)


def test_lcm_lora_for_sd15_reaches_every_adapted_layer_of_bk_sdm_tiny(sd15_unet_config, tmp_path):
    """LCM-LoRA's 278 layers on SD 1.5 (shapes only, rank 64): each BK-SDM-Tiny layer it would adapt gets the one in
    its place, of the right shape; the rest are in the blocks BK-SDM-Tiny removed."""
    from export.lora import LoraLayer, place_layers

    sd, small = meta_unet(sd15_unet_config), meta_unet(bk_sdm_tiny_config(sd15_unet_config))
    layers = [
        LoraLayer(name, (64, *m.weight.shape[1:]), (m.weight.shape[0], 64, *(1,) * (m.weight.ndim - 2)), 8.0)
        for name, m in lora_targets(sd)
    ]
    targets = place_layers(small, layers, None, tmp_path / "lcm.safetensors", sd15_unet_config)
    assert len(layers) == 278
    assert sorted(targets.values()) == sorted(name for name, _ in lora_targets(small))  # 147 of them
    assert all(not name.startswith(("mid_block.", "down_blocks.3.")) for name in targets)


# Export with --unet, on the tiny random models


def options_for(models: Path, out: Path, **changes) -> ExportOptions:
    return ExportOptions(
        sd=str(models / "sd"), beats=models / "beats.pt", embedder=models / "embedder.bin", out=out, **changes
    )


def export_logged(options: ExportOptions):
    log = io.StringIO()
    result = export_bundle(options, Console(file=log, width=200))
    return result, log.getvalue()


@pytest.fixture(scope="module")
def small_bundle(tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small") / "bundle"
    export_logged(options_for(tiny_models, out, unet=str(tiny_models / "bk-sdm-tiny")))
    return out


def test_the_unet_engine_is_the_small_unet(small_bundle, tiny_bundle, tiny_models):
    from diffusers import UNet2DConditionModel

    manifest = verify(small_bundle)
    feeds = unet_feeds(manifest, seed=7)
    (output,) = run_onnx(small_bundle / manifest.engines["unet"].file.path, feeds).values()
    small = UNet2DConditionModel.from_pretrained(tiny_models / "bk-sdm-tiny", subfolder="unet").eval()
    assert relative_error(output, torch_unet(small, feeds)) < 1e-4
    own = UNet2DConditionModel.from_pretrained(tiny_models / "sd", subfolder="unet").eval()
    assert relative_error(output, torch_unet(own, feeds)) > 0.1  # not the SD's own UNet

    def graph_size(bundle: Path) -> tuple[int, int]:
        graph = onnx.load(str(bundle / read_manifest(bundle).engines["unet"].file.path)).graph
        return len(graph.node), sum(int(np.prod(t.dims)) for t in graph.initializer)

    (nodes, weights), (own_nodes, own_weights) = graph_size(small_bundle), graph_size(tiny_bundle)
    assert nodes < own_nodes and weights < own_weights, (nodes, own_nodes, weights, own_weights)


def test_the_torch_backend_runs_the_small_unet(small_bundle):
    from runtime.pipeline import Pipeline

    manifest = read_manifest(small_bundle)
    feeds = unet_feeds(manifest, seed=5)
    (engine,) = run_onnx(small_bundle / manifest.engines["unet"].file.path, feeds).values()
    (torch_output,) = Pipeline.open(small_bundle, backend="torch").backend.run("unet", feeds).values()
    assert relative_error(torch_output, engine) < 1e-4


def test_the_manifest_records_the_unet_and_info_shows_it(small_bundle, tiny_bundle, tiny_models):
    from audiotoken_rt.cli import app

    manifest = read_manifest(small_bundle)
    (source,) = [s for s in manifest.sources if s.role == "unet"]
    folder = tiny_models / "bk-sdm-tiny" / "unet"
    assert source.ref == str(tiny_models / "bk-sdm-tiny")
    assert source.files == {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("config.json", "diffusion_pytorch_model.safetensors")
    }
    words = shlex.split(manifest.rebuild_command(small_bundle))
    assert words[words.index("--unet") + 1] == str(tiny_models / "bk-sdm-tiny")
    assert "--unet" not in shlex.split(read_manifest(tiny_bundle).rebuild_command(tiny_bundle))
    weights = source.files["diffusion_pytorch_model.safetensors"]
    shown = CliRunner().invoke(app, ["info", str(small_bundle)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"{tiny_models / 'bk-sdm-tiny'} in place of Stable Diffusion's, sha256 {weights[:16]}" in shown.output
    own = CliRunner().invoke(app, ["info", str(tiny_bundle)], env={"COLUMNS": "200"})
    assert "Stable Diffusion's own" in own.output


def test_a_bundle_with_the_small_unet_draws(small_bundle, clips):
    from runtime.pipeline import GenerationOptions, Pipeline

    result = Pipeline.open(small_bundle).draw(clips[0], GenerationOptions(seed=3, steps=4))
    picture = np.asarray(result.pictures[0])
    assert picture.shape == (64, 64, 3) and picture.std() > 1  # drawn, not blank
    assert result.timings.unet_calls == 4


def small_unet_folder(tiny_models: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the tiny stand-in's UNet folder with ``changes`` to its config."""
    folder = tmp_path / "unet"
    folder.mkdir()
    config = json.loads((tiny_models / "bk-sdm-tiny" / "unet" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    weights = tiny_models / "bk-sdm-tiny" / "unet" / "diffusion_pytorch_model.safetensors"
    (folder / weights.name).write_bytes(weights.read_bytes())
    return folder


@pytest.mark.parametrize(
    "changes, phrase",
    [
        ({"cross_attention_dim": 48}, "its cross_attention_dim is 48, the text encoder is 32-wide"),
        ({"in_channels": 9}, "it takes 9 and gives 4 latent channels"),
        ({"sample_size": 16}, "its sample_size is 16, Stable Diffusion's UNet's 8"),
        ({"_class_name": "UNet2DModel"}, "it is a 'UNet2DModel'"),
    ],
)
def test_a_unet_of_other_conditioning_is_refused_before_any_work(tiny_models, tmp_path, monkeypatch, changes, phrase):
    import export.builder

    def no_export(*args, **kwargs):
        raise AssertionError("an engine was exported")

    monkeypatch.setattr(export.builder, "export_engine", no_export)
    folder = small_unet_folder(tiny_models, tmp_path, **changes)
    with pytest.raises(CheckpointError) as raised:
        export_logged(options_for(tiny_models, tmp_path / "out", unet=str(folder)))
    message = str(raised.value)
    assert message.startswith(f"--unet {folder}: ") and phrase in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()


def test_what_is_not_a_unet_is_named(tiny_models, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "missing": "not a diffusers folder, and not a hub id",
        tmp_path / "empty": "no config.json, diffusion_pytorch_model.safetensors",
    }
    for path, phrase in cases.items():
        with pytest.raises(CheckpointError) as raised:
            export_logged(options_for(tiny_models, tmp_path / "out", unet=str(path)))
        assert str(raised.value).startswith(f"--unet {path}") and phrase in str(raised.value), str(raised.value)


def test_a_hub_id_fetches_only_the_unet_files(tiny_models, monkeypatch):
    import huggingface_hub

    from audiotoken.stable_diffusion import resolve_unet

    asked = []

    def snapshot(repo_id, allow_patterns=None, **kwargs):
        asked.append((repo_id, sorted(allow_patterns)))
        return str(tiny_models / "bk-sdm-tiny")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert resolve_unet("nota-ai/bk-sdm-tiny") == tiny_models / "bk-sdm-tiny" / "unet"
    assert asked == [
        (
            "nota-ai/bk-sdm-tiny",
            [
                "config.json",
                "diffusion_pytorch_model.safetensors",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
            ],
        )
    ]


def test_a_lora_for_sd_is_fused_into_the_small_unet_without_the_removed_blocks(tiny_models, tmp_path):
    """The tiny LCM-LoRA's attention layers (the tiny SD's attention widths are its small UNet's): the mid block's are
    left out, one stderr line says how many; the engine equals the small UNet with the rest fused by hand (the SD's
    up stage 1 is the small UNet's up stage 0)."""
    from diffusers import UNet2DConditionModel

    tensors = {
        k: v
        for k, v in load_file(tiny_models / "lcm-lora" / LORA_WEIGHTS_NAME).items()
        if "_attentions_" in k  # every layer of each attention block: proj_in/out, attn1/2, feed-forward
    }
    (tmp_path / "lora").mkdir()
    save_file(tensors, tmp_path / "lora" / LORA_WEIGHTS_NAME)
    result, log = export_logged(
        options_for(
            tiny_models, tmp_path / "bundle", unet=str(tiny_models / "bk-sdm-tiny"), lcm_lora=str(tmp_path / "lora")
        )
    )
    layers = {k.removesuffix(".alpha") for k in tensors if k.endswith(".alpha")}
    removed = {layer for layer in layers if layer.startswith("lora_unet_mid_block_")}
    assert len(layers) == 48 and len(removed) == 12
    assert "12 of its 48 layers are in blocks the --unet UNet lacks, left out; the other 36 are fused" in log

    small = UNet2DConditionModel.from_pretrained(tiny_models / "bk-sdm-tiny", subfolder="unet").eval()
    fused = copy.deepcopy(small)

    def sd_name(name: str) -> str:  # the small UNet's up stage 0 is the SD's up stage 1
        return "up_blocks.1." + name.removeprefix("up_blocks.0.") if name.startswith("up_blocks.0.") else name

    modules = {kohya_name(sd_name(name)): name for name, _ in small.named_modules()}
    for layer in layers - removed:
        down = tensors[f"{layer}.lora_down.weight"].double()  # [r, in] or [r, in, 1, 1]
        up = tensors[f"{layer}.lora_up.weight"].double()  # [out, r] or [out, r, 1, 1]
        weight = fused.get_submodule(modules[layer]).weight  # [out, in] or [out, in, 1, 1]
        delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * tensors[f"{layer}.alpha"].item() / len(down)
        weight.data = (weight.double() + delta).float()
    manifest = verify(result.folder)
    feeds = unet_feeds(manifest, seed=11)
    (output,) = run_onnx(result.folder / manifest.engines["unet"].file.path, feeds).values()
    assert relative_error(output, torch_unet(fused, feeds)) < 1e-4
    assert relative_error(output, torch_unet(small, feeds)) > 1e-2  # the LoRA changed it
    assert manifest.recipe.lora is not None and {s.role for s in manifest.sources} >= {"unet", "lora"}


def test_a_lora_that_does_not_fit_the_small_unet_is_refused_before_any_work(tiny_models, tmp_path, monkeypatch):
    import export.builder

    def no_export(*args, **kwargs):
        raise AssertionError("an engine was exported")

    monkeypatch.setattr(export.builder, "export_engine", no_export)
    with pytest.raises(CheckpointError) as raised:
        export_logged(
            options_for(
                tiny_models,
                tmp_path / "out",
                unet=str(tiny_models / "bk-sdm-tiny"),
                lcm_lora=str(tiny_models / "lcm-lora"),
            )
        )
    assert "does not fit the UNet" in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()
