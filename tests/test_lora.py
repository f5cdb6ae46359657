"""export.lora on the tiny random models: the fused UNet equals diffusers' own load_lora_weights + fuse_lora, its
weights follow W' = W + scale * alpha / rank * up @ down (recomputed here in float64 from the file's tensors), the
output moves visibly, and files that are not a LoRA for this UNet are one-line CheckpointErrors that change nothing.
Every distillation LoRA's stand-in (make-random's, in its published layout: kohya keys with alpha, diffusers keys
without; peft's lora_A/lora_B too) fuses so, found by its preset's file name in a folder or hub repo; a file without
alphas is fused at the rank, or at the alpha its preset was trained at (PCM's).
Into a small UNet distilled from the SD's (BK-SDM), a LoRA for the SD's UNet goes where BK-SDM's copy rule put each of
its layers, and those of removed blocks are left out; a LoRA made for the small UNet goes by its own names."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audiotoken.random_models import kohya_name, lora_stand_in, lora_targets, random_lora
from export.lora import fuse_lora
from runtime.errors import CheckpointError
from runtime.sampling import LORA_WEIGHTS_NAME, PRESETS
from tests.support import fused_by_hand


@pytest.fixture(scope="module", autouse=True)
def quiet():
    from audiotoken.stable_diffusion import quiet_libraries

    quiet_libraries()


@pytest.fixture
def unet(tiny_models):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_models / "sd", subfolder="unet").eval()


@pytest.fixture
def lora(tiny_models):
    return tiny_models / "lcm-lora"


def unet_inputs(unet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    size = unet.config.sample_size
    sample = torch.randn(2, 4, size, size, generator=generator)  # [2B, 4, h, w]
    states = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)  # [2B, 77, D]
    return sample, torch.tensor(601), states


@torch.no_grad()
def unet_output(unet) -> torch.Tensor:
    return unet(*unet_inputs(unet)).sample


def snapshot(module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_fused_unet_equals_diffusers_pipeline(tiny_models, lora, unet, scale):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_models / "sd", safety_checker=None, requires_safety_checker=False
    )
    pipe.load_lora_weights(lora)
    pipe.fuse_lora(lora_scale=scale)
    info = fuse_lora(unet, lora, scale=scale)

    error = (unet_output(unet) - unet_output(pipe.unet.eval())).abs().max().item()
    assert error < 1e-5, error  # measured ~1e-7
    layers = sum(key.endswith(".lora_down.weight") for key in load_file(lora / LORA_WEIGHTS_NAME))
    assert info.layers == layers == 79
    assert (info.source, info.scale, info.ranks, info.alphas) == (str(lora), scale, (4,), (2.0,))
    assert info.sha256 == hashlib.sha256((lora / LORA_WEIGHTS_NAME).read_bytes()).hexdigest()
    assert not hasattr(unet, "peft_config") and "lora" not in " ".join(unet.state_dict())  # plain weights again


def expected_weights(unet, tensors: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """W + scale * alpha / rank * up @ down in float64 for every layer of a kohya-layout LoRA, by UNet parameter name."""
    modules = {kohya_name(name): name for name, _ in unet.named_modules()}
    expected = {}
    for key in tensors:
        if not key.endswith(".alpha"):
            continue
        layer = key.removesuffix(".alpha")
        down = tensors[f"{layer}.lora_down.weight"].double()  # [r, in] or [r, in, kh, kw]
        up = tensors[f"{layer}.lora_up.weight"].double()  # [out, r] or [out, r, 1, 1]
        alpha, rank = tensors[key].double().item(), down.shape[0]
        weight = unet.get_submodule(modules[layer]).weight.detach().double()  # [out, in] or [out, in, kh, kw]
        delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)  # [out, in * kh * kw] -> the kernel's shape
        expected[f"{modules[layer]}.weight"] = weight + scale * alpha / rank * delta
    return expected


def check_formula(unet, tensors: dict[str, torch.Tensor], fused: dict[str, torch.Tensor], scale: float) -> None:
    expected = expected_weights(unet, tensors, scale)
    before = unet.state_dict()
    changed = {name for name in before if not torch.equal(before[name], fused[name])}
    assert changed == set(expected)  # the adapted weights and nothing else (no bias, no norm)
    errors = {name: (fused[name].double() - value).abs().max().item() for name, value in expected.items()}
    assert max(errors.values()) < 1e-6, max(errors.items(), key=lambda item: item[1])  # float32 rounding


def test_fused_weights_follow_the_lora_formula(lora, unet):
    tensors = load_file(lora / LORA_WEIGHTS_NAME)
    fused = copy.deepcopy(unet)
    fuse_lora(fused, lora, scale=0.7)
    check_formula(unet, tensors, fused.state_dict(), 0.7)
    kinds = {
        type(unet.get_submodule(name.removesuffix(".weight"))).__name__: name
        for name in expected_weights(unet, tensors, 1)
    }
    assert set(kinds) == {"Linear", "Conv2d"}
    assert unet.get_submodule("down_blocks.0.resnets.0.conv1").kernel_size == (3, 3)  # a 3x3 kernel is among them


def test_each_layer_keeps_its_own_alpha(lora, unet, tmp_path):
    """Alphas that differ per layer, attention layers included (diffusers' own kohya path gives those the common one)."""
    tensors = load_file(lora / LORA_WEIGHTS_NAME)
    for i, key in enumerate(sorted(k for k in tensors if k.endswith(".alpha"))):
        tensors[key] = torch.tensor(float(1 + i % 5), dtype=torch.float16)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha" in tensors
    save_file(tensors, tmp_path / "mixed.safetensors")
    fused = copy.deepcopy(unet)
    info = fuse_lora(fused, tmp_path / "mixed.safetensors")
    check_formula(unet, tensors, fused.state_dict(), 1.0)
    assert info.alphas == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_fusing_changes_the_output_visibly(lora, unet):
    before = unet_output(unet)
    fuse_lora(unet, lora)
    after = unet_output(unet)
    change = ((after - before).norm() / before.norm()).item()
    assert 0.1 < change < 1.0, change  # measured ~0.3: clearly visible, not exploded
    assert torch.isfinite(after).all() and 0.5 < after.std().item() / before.std().item() < 2


def test_a_hub_id_resolves_through_hf_hub_download(lora, unet, monkeypatch):
    import huggingface_hub

    asked = []

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(lora / LORA_WEIGHTS_NAME)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    info = fuse_lora(unet, "latent-consistency/lcm-lora-sdv1-5")
    assert asked == [("latent-consistency/lcm-lora-sdv1-5", LORA_WEIGHTS_NAME)]
    assert info.source == "latent-consistency/lcm-lora-sdv1-5" and info.layers == 79


def assert_fused_as(fused, expected) -> None:
    """Every weight of ``fused`` equals ``expected``'s (the LoRA applied by hand in float64) to float32 rounding."""
    want = expected.state_dict()
    errors = {
        name: (value.double() - want[name].double()).abs().max().item() for name, value in fused.state_dict().items()
    }
    assert max(errors.values()) < 1e-6, max(errors.items(), key=lambda item: item[1])


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_distillation_loras_stand_in_fuses_as_diffusers_fuses_it(tiny_models, unet, name):
    """Found by its preset's file name in the folder standing in for its repo; kohya keys with alpha (LCM-LoRA,
    Hyper-SD, PCM) or diffusers keys without (TCD)."""
    from diffusers import StableDiffusionPipeline

    preset, file = PRESETS[name], lora_stand_in(tiny_models, name)
    repo = file.parents[len(Path(preset.lora_file).parts) - 1]  # the folder standing in for the hub repo
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_models / "sd", safety_checker=None, requires_safety_checker=False
    )
    pipe.load_lora_weights(file.parent, weight_name=file.name)
    pipe.fuse_lora(lora_scale=0.8)
    fused = copy.deepcopy(unet)
    info = fuse_lora(fused, repo, 0.8, weights_name=preset.lora_file, default_alpha=preset.lora_alpha)
    assert info.sha256 == hashlib.sha256(file.read_bytes()).hexdigest() and info.layers == 79
    assert_fused_as(fused, fused_by_hand(unet, load_file(file), 0.8))
    error = (unet_output(fused) - unet_output(pipe.unet.eval())).abs().max().item()
    assert error < 1e-5, error


def test_peft_keys_fuse_at_their_rank(tiny_models, unet, tmp_path):
    """peft's unet.<module>.lora_A/lora_B layout (no alpha): diffusers reads it at alpha = rank."""
    tensors = {
        key.replace(".lora.down.weight", ".lora_A.weight").replace(".lora.up.weight", ".lora_B.weight"): value
        for key, value in load_file(lora_stand_in(tiny_models, "tcd")).items()
    }
    assert all(key.endswith((".lora_A.weight", ".lora_B.weight")) for key in tensors)
    fused = copy.deepcopy(unet)
    info = fuse_lora(fused, write(tmp_path, "peft.safetensors", tensors), 1.5)
    assert (info.layers, info.ranks, info.alphas) == (79, (4,), (4.0,))
    assert_fused_as(fused, fused_by_hand(unet, tensors, 1.5))


def test_a_pcm_file_without_alphas_is_fused_at_the_alpha_pcm_was_trained_at(tiny_models, unet, tmp_path):
    pcm = PRESETS["pcm-4step"]
    tensors = {k: v for k, v in load_file(lora_stand_in(tiny_models, "pcm-4step")).items() if not k.endswith(".alpha")}
    bare = write(tmp_path, "bare.safetensors", tensors)
    fused = copy.deepcopy(unet)
    info = fuse_lora(fused, bare, default_alpha=pcm.lora_alpha)
    assert pcm.lora_alpha == 8.0 and info.alphas == (8.0,)  # 8 / rank, not the rank's 1
    assert_fused_as(fused, fused_by_hand(unet, tensors, 1.0, default_alpha=8.0))
    at_rank = copy.deepcopy(unet)
    assert fuse_lora(at_rank, bare).alphas == (4.0,)  # without a preset's alpha: diffusers' reading
    assert_fused_as(at_rank, fused_by_hand(unet, tensors, 1.0))


def test_a_presets_file_is_found_in_a_folder_or_hub_repo_before_diffusers_default(tiny_models, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from export.lora import lora_weights_file

    pcm = PRESETS["pcm-8step"]
    repo = lora_stand_in(tiny_models, "pcm-8step").parents[1]  # pcm/, holding sd15/<file>
    assert lora_weights_file(repo, pcm.lora_file) == repo / pcm.lora_file
    (tmp_path / "renamed").mkdir()
    shutil.copy(repo / pcm.lora_file, tmp_path / "renamed" / LORA_WEIGHTS_NAME)  # a re-upload under diffusers' name
    assert lora_weights_file(tmp_path / "renamed", pcm.lora_file) == tmp_path / "renamed" / LORA_WEIGHTS_NAME
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=f"no {pcm.lora_file} or {LORA_WEIGHTS_NAME} in this folder"):
        lora_weights_file(tmp_path / "empty", pcm.lora_file)

    asked, lacking = [], {pcm.lora_file}

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        if filename in lacking:
            raise EntryNotFoundError(f"{filename} is not in {repo_id}")
        if filename == "gated":
            raise OSError("401 Client Error: gated repo")
        return str(repo / pcm.lora_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    lacking = set()
    lora_weights_file(pcm.lora, pcm.lora_file)
    assert asked == [(pcm.lora, pcm.lora_file)]
    asked.clear()
    lacking = {pcm.lora_file}
    lora_weights_file("someone/pcm-copy", pcm.lora_file)  # not there: diffusers' default name next
    assert asked == [("someone/pcm-copy", pcm.lora_file), ("someone/pcm-copy", LORA_WEIGHTS_NAME)]
    asked.clear()
    with pytest.raises(CheckpointError) as raised:
        lora_weights_file("someone/private", "gated")
    assert asked == [("someone/private", "gated")]  # any other failure is not retried under another name
    assert "OSError: 401 Client Error" in str(raised.value) and "\n" not in str(raised.value)


def other_unet(**changes):
    """A tiny UNet of another architecture (the shape of the tiny one, with ``changes``)."""
    from diffusers import UNet2DConditionModel

    config = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    torch.manual_seed(1)
    return UNet2DConditionModel(**{**config, **changes})


def write(tmp_path, name: str, tensors: dict[str, torch.Tensor]):
    path = tmp_path / name
    save_file(tensors, path)
    return path


def bad_sources(tiny_models, tmp_path) -> dict[str, tuple[object, str]]:
    """Each refused source and a phrase its message must hold."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.safetensors").write_bytes(b"this is not a safetensors file")
    lora = load_file(tiny_models / "lcm-lora" / LORA_WEIGHTS_NAME)
    narrow = random_lora(other_unet(cross_attention_dim=48), rank=4, alpha=2.0)  # an SD 2.x-like text width
    deeper = random_lora(
        other_unet(
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2,
        ),
        rank=4,
        alpha=2.0,
    )
    shutil.copy(tiny_models / "sd" / "unet" / "diffusion_pytorch_model.safetensors", tmp_path / "unet.safetensors")
    text = {
        **lora,
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 32, dtype=torch.float16),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(37, 4, dtype=torch.float16),
    }
    return {
        "missing file": (tmp_path / "nothing.safetensors", "not found"),
        "folder without weights": (tmp_path / "empty", f"no {LORA_WEIGHTS_NAME}"),
        "not safetensors": (tmp_path / "garbage.safetensors", "not a readable safetensors file"),
        "not a LoRA": (tmp_path / "unet.safetensors", "not a LoRA"),
        "shapes do not fit": (write(tmp_path, "narrow.safetensors", narrow), "does not fit the UNet"),
        "layers the UNet lacks": (write(tmp_path, "deeper.safetensors", deeper), "match no layer of the UNet"),
        "text encoder layers": (write(tmp_path, "text.safetensors", text), "text encoder"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "folder without weights",
        "not safetensors",
        "not a LoRA",
        "shapes do not fit",
        "layers the UNet lacks",
        "text encoder layers",
    ],
)
def test_refusals_are_one_line_and_change_nothing(tiny_models, unet, tmp_path, case):
    source, phrase = bad_sources(tiny_models, tmp_path)[case]
    before = snapshot(unet)
    with pytest.raises(CheckpointError) as raised:
        fuse_lora(unet, source)
    message = str(raised.value)
    assert phrase in message and str(source) in message and "\n" not in message, message
    assert raised.value.hint
    after = unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(unet, "peft_config")


# A LoRA made for Stable Diffusion's UNet, fused into a small UNet distilled from it (export --unet). The miniature SD
# UNet below has SD 1.x's layout (two attention stages, then an innermost stage without attention as wide as the one
# above it, two pairs a stage); its small UNet is BK-SDM-Tiny's removal of blocks (audiotoken.random_models). Where
# each small-UNet layer comes from is BK-SDM's copy rule (copy_weight_from_teacher in its kd_train_text_to_image.py:
# a prefix table, the same name otherwise), written out here for this miniature: its up stage i is the SD's i + 1,
# whose third pair becomes its second.
MINIATURE_SD = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
)
MINIATURE_COPIED_FROM = {
    "up_blocks.0.resnets.0.": "up_blocks.1.resnets.0.",
    "up_blocks.0.attentions.0.": "up_blocks.1.attentions.0.",
    "up_blocks.0.resnets.1.": "up_blocks.1.resnets.2.",
    "up_blocks.0.attentions.1.": "up_blocks.1.attentions.2.",
    "up_blocks.0.upsamplers.": "up_blocks.1.upsamplers.",
    "up_blocks.1.resnets.0.": "up_blocks.2.resnets.0.",
    "up_blocks.1.attentions.0.": "up_blocks.2.attentions.0.",
    "up_blocks.1.resnets.1.": "up_blocks.2.resnets.2.",
    "up_blocks.1.attentions.1.": "up_blocks.2.attentions.2.",
}


def copied_from(name: str) -> str:
    """The miniature SD layer a small-UNet layer starts from, by BK-SDM's rule."""
    prefix = next((p for p in MINIATURE_COPIED_FROM if f"{name}.".startswith(p)), None)
    return name if prefix is None else MINIATURE_COPIED_FROM[prefix] + f"{name}.".removeprefix(prefix)[:-1]


@pytest.fixture
def miniature():
    """The miniature SD UNet and its small UNet (random weights, seeded)."""
    from diffusers import UNet2DConditionModel

    from audiotoken.random_models import bk_sdm_tiny_config

    torch.manual_seed(3)
    sd = UNet2DConditionModel(**MINIATURE_SD).eval()
    small = UNet2DConditionModel.from_config(bk_sdm_tiny_config(dict(sd.config))).eval()
    assert small.mid_block is None and len(small.up_blocks) == 2 and len(small.up_blocks[0].resnets) == 2
    return sd, small


def test_a_lora_for_sd_fuses_into_the_small_unet_where_its_layers_were_kept(miniature, tmp_path):
    sd, small = miniature
    tensors = random_lora(sd, rank=4, alpha=2.0)
    file = write(tmp_path, "sd.safetensors", tensors)
    fused = copy.deepcopy(small)
    info = fuse_lora(fused, file, scale=0.7, made_for=dict(sd.config))

    kept = {kohya_name(copied_from(name)): name for name, _ in small.named_modules() if name}  # SD layer -> small's
    expected, skipped = {}, []
    for key in tensors:
        if not key.endswith(".alpha"):
            continue
        layer = key.removesuffix(".alpha")
        if layer not in kept:
            skipped.append(layer)
            continue
        down = tensors[f"{layer}.lora_down.weight"].double()  # [r, in] or [r, in, kh, kw]
        up = tensors[f"{layer}.lora_up.weight"].double()  # [out, r] or [out, r, 1, 1]
        weight = small.get_submodule(kept[layer]).weight.detach().double()  # [out, in] or [out, in, kh, kw]
        delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
        expected[f"{kept[layer]}.weight"] = weight + 0.7 * tensors[key].double().item() / down.shape[0] * delta
    before, after = small.state_dict(), fused.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(expected)
    errors = {name: (after[name].double() - value).abs().max().item() for name, value in expected.items()}
    assert max(errors.values()) < 1e-6, max(errors.items(), key=lambda item: item[1])
    assert (info.layers, info.skipped) == (len(expected), len(skipped))
    assert {
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",  # the mid block is gone
        "lora_unet_down_blocks_0_resnets_1_conv1",  # a down stage keeps its first pair
        "lora_unet_up_blocks_1_resnets_1_conv1",  # an up stage its first and last
        "lora_unet_up_blocks_0_resnets_0_conv1",  # the innermost stage is gone
        "lora_unet_down_blocks_1_downsamplers_0_conv",  # and with it the downsampling into it
    } <= set(skipped)
    assert "up_blocks.0.resnets.1.conv1.weight" in changed  # from the SD's up_blocks.1.resnets.2: one stage out
    assert "up_blocks.0.upsamplers.0.conv.weight" in changed


def test_a_lora_made_for_the_small_unet_fuses_by_its_own_names(miniature, tmp_path):
    sd, small = miniature
    tensors = random_lora(small, rank=4, alpha=2.0)
    fused = copy.deepcopy(small)
    info = fuse_lora(fused, write(tmp_path, "small.safetensors", tensors), scale=0.5, made_for=dict(sd.config))
    check_formula(small, tensors, fused.state_dict(), 0.5)
    assert info.skipped == 0 and info.layers == len(lora_targets(small))


def test_a_lora_whose_kept_layers_do_not_fit_the_small_unet_is_refused(tiny_models, lora):
    """The tiny random SD's innermost stage is twice as wide as the one above it (SD 1.x's are as wide), so its small
    UNet's first up stage reads narrower skips than the SD stage it comes from: the LoRA's layer there cannot fit."""
    from diffusers import UNet2DConditionModel

    small = UNet2DConditionModel.from_pretrained(tiny_models / "bk-sdm-tiny", subfolder="unet").eval()
    made_for = dict(UNet2DConditionModel.load_config(tiny_models / "sd", subfolder="unet"))
    before = snapshot(small)
    with pytest.raises(CheckpointError) as raised:
        fuse_lora(small, lora, made_for=made_for)
    message = str(raised.value)
    assert "\n" not in message and "placed on the --unet UNet's up_blocks.0.resnets." in message, message
    assert raised.value.hint and "without --unet" in raised.value.hint
    after = small.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not hasattr(small, "peft_config")
