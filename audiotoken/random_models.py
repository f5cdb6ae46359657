"""The one factory of random-weight models in the official file formats (``audiotoken-rt make-random``).

No model hub is reachable here, so every test and benchmark runs the real loading code on files this module
writes, laid out exactly like the real ones:
- ``DIR/sd/``: a diffusers Stable Diffusion folder (``model_index.json``, ``text_encoder``, ``tokenizer`` with the
  real CLIP BPE vocabulary, ``unet``, ``vae``, ``scheduler`` with the official PNDM config);
- ``DIR/beats.pt``: the upstream BEATs ``{cfg, model}`` checkpoint (12 layers, weight norm as ``weight_g`` and
  ``weight_v``, the relative-position table aliased in every layer, a fine-tuned ``predictor`` head);
- ``DIR/embedder.bin``: a bare state_dict with the official ``embedder_learned_embeds.bin`` key names;
- ``DIR/lcm-lora/pytorch_lora_weights.safetensors``: a LoRA in the layout of ``latent-consistency/lcm-lora-sdv1-5``
  (kohya-style keys over diffusers module names: ``lora_unet_<module path, dots as _>.lora_down.weight``,
  ``.lora_up.weight`` and a scalar ``.alpha``, fp16, on every layer LCM-LoRA adapts: ``LCM_LORA_TARGETS``);
- the other distillation LoRAs (``runtime.sampling.PRESETS``), each in a folder standing in for its hub repo, under
  its published file name, on the same layers (``LORA_STAND_INS``): ``DIR/hyper-sd/Hyper-SD15-1step-lora.safetensors``
  (and the 2-, 4- and 8-step files; kohya keys with alpha, fp32), ``DIR/tcd-lora/pytorch_lora_weights.safetensors``
  (diffusers keys ``unet.<module path>.lora.down.weight`` / ``.lora.up.weight``, no alpha, fp16) and
  ``DIR/pcm/sd15/pcm_sd15_smallcfg_{2,4,8,16}step_converted.safetensors`` (kohya keys with alpha, fp16); for ``sd15``
  only the Hyper-SD 1-step one (the benchmarks' one-step recipe);
- ``DIR/taesd/``: a diffusers ``AutoencoderTiny`` (``config.json`` + ``diffusion_pytorch_model.safetensors``),
  the architecture of ``madebyollin/taesd`` for ``sd15``: 4 latent channels, 8x spatial factor like the SD VAE.
- ``DIR/bk-sdm-tiny/unet/``: a diffusers UNet folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)
  with BK-SDM-Tiny's blocks removed from ``sd/``'s UNet (``bk_sdm_tiny_config``): for ``sd15`` the configuration of
  ``nota-ai/bk-sdm-tiny``'s UNet (0.32 B parameters), the stand-in of ``export --unet``.
- ``DIR/eval/`` (``evaluation=True``, ``make-random --eval``): the evaluation's models in their published formats
  (``audiotoken.evaluation.stand_ins``: OpenAI CLIP ViT-B/32 and ViT-L/14 as transformers folders with the
  tokenizer above, Wav2CLIP, pytorch-fid's FID Inception).

``tiny`` is seeded, a few MB and takes seconds on a CPU; ``sd15`` has the real SD 1.5 and BEATs iter3
architectures (random weights, ~4.5 GB), for benchmarks.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from audiotoken.beats import FEATURE_LAYERS, ITER3_CONFIG, BEATs, BEATsConfig
from audiotoken.embedder import Embedder
from runtime.atomic import building_folder
from runtime.errors import ConfigError
from runtime.sampling import DEFAULT_PRESET, PRESETS

# The upstream cfg of BEATs iter3 checkpoints also carries these training-only fields
# (docs/method.md#the-checkpoint); the loader ignores them.
TRAINING_ONLY_CFG = {
    "layer_wise_gradient_decay_ratio": 0.6,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.0,
    "finetuned_model": True,
    "predictor_dropout": 0.0,
    "predictor_class": 527,
}

# PNDM with the SD 1.x schedule, as in CompVis/stable-diffusion-v1-4's scheduler_config.json
# (docs/method.md#the-official-recipe); its clip_sample false is what a DDIM built from it (the Hyper-SD and PCM
# recipes) reads: diffusers' DDIMScheduler clips x0 to [-1, 1] where the config does not say
SD1_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
}
VAE_SCALING_FACTOR = 0.18215


@dataclass(frozen=True)
class Architecture:
    """Sizes of every random model; D (``token_dim``) is the CLIP width and the UNet cross-attention width."""

    token_dim: int
    clip_layers: int
    clip_heads: int
    clip_ffn: int
    unet_channels: tuple[int, ...]
    unet_layers: int
    unet_head_dim: int
    latent_size: int  # UNet sample_size; images are 8x larger
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_groups: int
    beats: BEATsConfig
    lora_rank: int  # LCM-LoRA's rank (64 for SD 1.5) and alpha (the scale is alpha / rank), those of every stand-in
    lora_alpha: float
    lora_presets: tuple[str, ...]  # the distillation presets whose LoRA gets a stand-in
    taesd_channels: int  # AutoencoderTiny: the width of every block, and the blocks per stage
    taesd_encoder_blocks: tuple[int, ...]
    taesd_decoder_blocks: tuple[int, ...]


ARCHITECTURES = {
    "tiny": Architecture(
        token_dim=32,
        clip_layers=2,
        clip_heads=4,
        clip_ffn=37,
        unet_channels=(32, 64),
        unet_layers=1,
        unet_head_dim=8,
        latent_size=8,
        vae_channels=(8, 16, 32, 32),
        vae_layers=1,
        vae_groups=8,
        beats=replace(
            ITER3_CONFIG,
            embed_dim=16,
            encoder_embed_dim=32,
            encoder_ffn_embed_dim=64,
            encoder_attention_heads=4,
            conv_pos=16,
            conv_pos_groups=4,
        ),
        lora_rank=4,
        lora_alpha=2.0,
        lora_presets=tuple(PRESETS),
        taesd_channels=8,
        taesd_encoder_blocks=(1, 1, 1, 1),
        taesd_decoder_blocks=(1, 1, 1, 1),
    ),
    "sd15": Architecture(
        token_dim=768,
        clip_layers=12,
        clip_heads=12,
        clip_ffn=3072,
        unet_channels=(320, 640, 1280, 1280),
        unet_layers=2,
        unet_head_dim=8,
        latent_size=64,
        vae_channels=(128, 256, 512, 512),
        vae_layers=2,
        vae_groups=32,
        beats=ITER3_CONFIG,
        lora_rank=64,
        lora_alpha=8.0,
        lora_presets=(DEFAULT_PRESET, "hyper-1step"),  # 135 MB and 269 MB; the others would add 1.2 GB
        taesd_channels=64,
        taesd_encoder_blocks=(1, 3, 3, 3),
        taesd_decoder_blocks=(3, 3, 3, 1),
    ),
}

# The layers LCM-LoRA adapts: the peft ``target_modules`` of diffusers' LCM-LoRA distillation script
# (examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py), matched as peft matches them (a module whose
# name is the target or ends with "." + target). Rank 64 on SD 1.5 gives 278 layers and 67.25 M values: the 135 MB fp16
# file of latent-consistency/lcm-lora-sdv1-5. Its alpha (8) is peft's default lora_alpha, which that script used.
LCM_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)
LORA_RELATIVE_CHANGE = 0.1  # each adapted weight moves by ~this fraction of its spread: the UNet output by ~30%
SMALL_UNET_DIR = "bk-sdm-tiny"  # laid out like the hub repo nota-ai/bk-sdm-tiny: the UNet in unet/


@dataclass(frozen=True)
class LoraStandIn:
    """How the stand-ins of one hub repo's LoRAs are written: the folder standing in for the repo, the key layout
    (``kohya``: ``lora_unet_<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``; ``diffusers``:
    ``unet.<module>.lora.down.weight`` / ``.lora.up.weight``, no alpha) and the dtype."""

    folder: str
    keys: str
    dtype: torch.dtype


# Each distillation LoRA's repo (runtime.sampling.PRESETS' sources). LCM-LoRA's layout is its published file's; the
# others' key layouts are unconfirmed (no header was read): their sizes give the dtypes (Hyper-SD15's 269 MB files
# are LCM-LoRA's layers in fp32, TCD's 135 MB and PCM's in fp16), PCM's training code writes kohya keys with its
# alpha for its "_converted" files, and TCD's stand-in takes the layout diffusers' training scripts save, so that
# both layouts export.lora reads are exercised.
LORA_STAND_INS = {
    "latent-consistency/lcm-lora-sdv1-5": LoraStandIn("lcm-lora", "kohya", torch.float16),
    "ByteDance/Hyper-SD": LoraStandIn("hyper-sd", "kohya", torch.float32),
    "h1t/TCD-SD15-LoRA": LoraStandIn("tcd-lora", "diffusers", torch.float16),
    "wangfuyun/PCM_Weights": LoraStandIn("pcm", "kohya", torch.float16),
}


def lora_stand_in(models: str | Path, preset: str) -> Path:
    """Where ``make-random`` writes the stand-in of ``preset``'s LoRA under ``models``: its repo's folder (what
    ``export --lora`` takes, finding the preset's file inside) and the file under its published name."""
    source = PRESETS[preset]
    return Path(models) / LORA_STAND_INS[source.lora].folder / source.lora_file


BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # the CLIP vocabulary: 256 bytes, 256 word-final bytes, 48 894 merges, BOS, EOS = 49 408


def clip_bpe_file() -> Path:
    """The CLIP BPE merges shipped in the open-clip-torch wheel (found without importing it: it needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz" if spec else None
    if path is None or not path.is_file():
        raise ConfigError(
            "the CLIP BPE vocabulary (open_clip/bpe_simple_vocab_16e6.txt.gz) is not installed",
            hint="pip install --no-deps open-clip-torch",
        )
    return path


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in vocabulary order.

    Bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves and come first;
    the other 68 bytes map to code points 256, 257, ... in byte order and come after them.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def write_clip_tokenizer(folder: Path) -> None:
    """Write a transformers CLIPTokenizer folder (vocab.json, merges.txt, configs) from the real CLIP vocabulary."""
    with gzip.open(clip_bpe_file(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : N_MERGES + 1]  # line 0 is a version header
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def build_stable_diffusion(arch: Architecture, tokenizer_dir: Path):
    """A diffusers StableDiffusionPipeline with random weights and the official PNDM scheduler config."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=arch.token_dim,
            intermediate_size=arch.clip_ffn,
            num_hidden_layers=arch.clip_layers,
            num_attention_heads=arch.clip_heads,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=arch.token_dim,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
        )
    )
    n = len(arch.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=arch.latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=arch.unet_channels,
        layers_per_block=arch.unet_layers,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=arch.token_dim,
        attention_head_dim=arch.unet_head_dim,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=arch.latent_size * 8,
        block_out_channels=arch.vae_channels,
        layers_per_block=arch.vae_layers,
        norm_num_groups=arch.vae_groups,
        down_block_types=("DownEncoderBlock2D",) * len(arch.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(arch.vae_channels),
        scaling_factor=VAE_SCALING_FACTOR,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD1_SCHEDULER),  # from_config keeps clip_sample, which PNDM does not read
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def bk_sdm_tiny_config(config: dict) -> dict:
    """BK-SDM-Tiny's UNet made from SD 1.x's UNet ``config``, as BK-SDM removes blocks (its
    src/unet_config/bk_tiny/config.json, the config of nota-ai/bk-sdm-tiny's UNet, for SD 1.4's): no mid block, one
    residual/attention pair fewer per stage (at least one kept), and the innermost stage gone (the last down stage
    and the first up stage, the two without attention). diffusers' private keys are left out (its
    ``_use_default_values`` would put the mid block back)."""
    stages = len(config["block_out_channels"]) - 1
    return {
        **{key: value for key, value in config.items() if not key.startswith("_")},
        "block_out_channels": tuple(config["block_out_channels"][:stages]),
        "down_block_types": tuple(config["down_block_types"][:stages]),
        "up_block_types": tuple(config["up_block_types"][1:]),
        "layers_per_block": max(1, config["layers_per_block"] - 1),
        "mid_block_type": None,
    }


def build_small_unet(sd_unet_config: dict):
    """A diffusers ``UNet2DConditionModel`` of BK-SDM-Tiny's architecture made from SD's UNet's (random weights)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(bk_sdm_tiny_config(sd_unet_config))


def lora_targets(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The UNet's layers that LCM-LoRA adapts (``LCM_LORA_TARGETS``), in module order, as (name, layer)."""
    return [
        (name, module)
        for name, module in unet.named_modules()
        if any(name == target or name.endswith("." + target) for target in LCM_LORA_TARGETS)
    ]


def kohya_name(module_name: str) -> str:
    """``down_blocks.0.resnets.0.conv1`` -> ``lora_unet_down_blocks_0_resnets_0_conv1`` (the LCM-LoRA file's layer name)."""
    return "lora_unet_" + module_name.replace(".", "_")


def random_lora(
    unet: torch.nn.Module,
    rank: int,
    alpha: float,
    seed: int = 0,
    keys: str = "kohya",
    dtype: torch.dtype = torch.float16,
) -> dict[str, torch.Tensor]:
    """A random LoRA over ``lora_targets(unet)``: by default in the lcm-lora-sdv1-5 layout (``kohya`` keys, fp16,
    alpha a 0-d tensor); ``keys="diffusers"``: ``unet.<module>.lora.down.weight`` / ``.lora.up.weight`` and no alpha
    (diffusers then fuses at alpha = rank, so ``alpha`` must be ``rank``).

    ``lora_down`` is [rank, in] for a Linear and [rank, in, kh, kw] for a Conv2d; ``lora_up`` is [out, rank] or
    [out, rank, 1, 1]. Each fused delta ``alpha / rank * up @ down`` has a spread of ``LORA_RELATIVE_CHANGE`` times
    the weight's own: a visible change of the UNet's output that keeps it finite.
    """
    if keys not in ("kohya", "diffusers") or (keys == "diffusers" and alpha != rank):
        raise ValueError(f"random_lora: keys {keys!r} with alpha {alpha} at rank {rank}")
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, layer in lora_targets(unet):
        weight = layer.weight.detach().float()  # [out, in] or [out, in, kh, kw]
        fan_in = weight[0].numel()
        down = torch.randn(rank, *weight.shape[1:], generator=generator) / math.sqrt(fan_in)
        up_std = LORA_RELATIVE_CHANGE * weight.std().item() * math.sqrt(fan_in) / (alpha / rank * math.sqrt(rank))
        up = torch.randn(weight.shape[0], rank, *(1,) * (weight.ndim - 2), generator=generator) * up_std
        if keys == "kohya":
            key = kohya_name(name)
            state[f"{key}.lora_down.weight"] = down.to(dtype)
            state[f"{key}.lora_up.weight"] = up.to(dtype)
            state[f"{key}.alpha"] = torch.tensor(alpha, dtype=dtype)
        else:
            state[f"unet.{name}.lora.down.weight"] = down.to(dtype)
            state[f"unet.{name}.lora.up.weight"] = up.to(dtype)
    return state


def build_taesd(arch: Architecture):
    """A diffusers ``AutoencoderTiny``: latents [B, 4, h, w] <-> images [B, 3, 8h, 8w] (4 stages, 3 resamplings).

    Every argument is spelled out: for ``sd15`` they are the values of ``madebyollin/taesd``'s config.json
    (which are also diffusers' defaults); ``tiny`` only narrows the blocks.
    """
    from diffusers import AutoencoderTiny

    channels = (arch.taesd_channels,) * 4
    return AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=channels,
        decoder_block_out_channels=channels,
        act_fn="relu",
        upsample_fn="nearest",
        latent_channels=4,
        upsampling_scaling_factor=2,
        num_encoder_blocks=arch.taesd_encoder_blocks,
        num_decoder_blocks=arch.taesd_decoder_blocks,
        latent_magnitude=3,
        latent_shift=0.5,
        force_upcast=False,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def beats_checkpoint(config: BEATsConfig, n_classes: int = 527) -> dict:
    """An upstream-format BEATs checkpoint of a randomly initialised model, with a fine-tuned predictor head."""
    model = BEATs(config)
    with torch.no_grad():  # default init leaves grep_a at 1 and the bias table N(0, 1); make them less uniform
        model.encoder.relative_attention_bias.weight.mul_(0.1)
    checkpoint = model.to_checkpoint()
    checkpoint["cfg"] = {**asdict(config), **TRAINING_ONLY_CFG}
    checkpoint["model"]["predictor.weight"] = torch.randn(n_classes, config.encoder_embed_dim) * 0.02
    checkpoint["model"]["predictor.bias"] = torch.zeros(n_classes)
    checkpoint["label_dict"] = {i: f"/m/{i:05d}" for i in range(n_classes)}
    return checkpoint


def make_random(
    out: str | Path, arch: str = "tiny", seed: int = 0, force: bool = False, evaluation: bool = False
) -> Path:
    """Write ``sd/``, ``beats.pt``, ``embedder.bin``, ``lcm-lora/`` and the other distillation LoRAs' folders,
    ``taesd/``, ``bk-sdm-tiny/`` (and with ``evaluation``, ``eval/``) under ``out``, atomically (built aside, then
    renamed)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(
            f"{out}: exists and is not empty", hint="pass --force to replace it, or choose another folder"
        )
    with building_folder(out) as staging:
        torch.manual_seed(seed)
        write_clip_tokenizer(staging / "clip_tokenizer")
        pipe = build_stable_diffusion(spec, staging / "clip_tokenizer")
        pipe.save_pretrained(staging / "sd")
        # each LoRA draws from its own generator, so the global stream (and every file below) is as before
        for index, preset in enumerate(spec.lora_presets):
            layout = LORA_STAND_INS[PRESETS[preset].lora]
            file = lora_stand_in(staging, preset)
            file.parent.mkdir(parents=True, exist_ok=True)
            alpha = spec.lora_alpha if layout.keys == "kohya" else spec.lora_rank  # no alpha stored: the rank's
            tensors = random_lora(pipe.unet, spec.lora_rank, alpha, seed + index, layout.keys, layout.dtype)
            save_file(tensors, file, metadata={"format": "pt"})
        unet_config = dict(pipe.unet.config)
        del pipe
        # keep the hub's SD 1.x tokenizer layout (vocab.json + merges.txt) rather than transformers' re-save
        shutil.rmtree(staging / "sd" / "tokenizer")
        os.replace(staging / "clip_tokenizer", staging / "sd" / "tokenizer")
        torch.save(beats_checkpoint(spec.beats), staging / "beats.pt")
        embedder = Embedder(len(FEATURE_LAYERS) * spec.beats.encoder_embed_dim, spec.token_dim)
        torch.save(embedder.state_dict(), staging / "embedder.bin")
        torch.manual_seed(seed)  # the tiny autoencoder comes last, from the seed again
        build_taesd(spec).save_pretrained(staging / "taesd")
        torch.manual_seed(seed)  # and the small UNet after it
        build_small_unet(unet_config).save_pretrained(staging / SMALL_UNET_DIR / "unet")
        if evaluation:
            from audiotoken.evaluation.stand_ins import write_random_eval_models

            write_random_eval_models(staging / "eval", staging / "sd" / "tokenizer", arch=arch, seed=seed)
    return out
