"""The one factory of random-weight models in the official file formats (``audiotoken-rt make-random``).

No model hub is reachable here, so every test and benchmark runs the real loading code on files this module
writes, laid out exactly like the real ones:
- ``DIR/sd/``: a diffusers Stable Diffusion folder (``model_index.json``, ``text_encoder``, ``tokenizer`` with the
  real CLIP BPE vocabulary, ``unet``, ``vae``, ``scheduler`` with the official PNDM config);
- ``DIR/beats.pt``: the upstream BEATs ``{cfg, model}`` checkpoint (12 layers, weight norm as ``weight_g`` and
  ``weight_v``, the relative-position table aliased in every layer, a fine-tuned ``predictor`` head);
- ``DIR/embedder.bin``: a bare state_dict with the official ``embedder_learned_embeds.bin`` key names.

``tiny`` is seeded, a few MB and takes seconds on a CPU; ``sd15`` has the real SD 1.5 and BEATs iter3
architectures (random weights, ~4.5 GB), for benchmarks.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from audiotoken.beats import FEATURE_LAYERS, ITER3_CONFIG, BEATs, BEATsConfig
from audiotoken.embedder import Embedder
from runtime.atomic import building_folder
from runtime.errors import ConfigError

# The upstream cfg of BEATs iter3 checkpoints also carries these training-only fields (spec 2.1); the loader ignores them.
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

# PNDM with the SD 1.x schedule, as in CompVis/stable-diffusion-v1-4's scheduler_config.json (spec 5.4)
SD1_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
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


ARCHITECTURES = {
    "tiny": Architecture(
        token_dim=32, clip_layers=2, clip_heads=4, clip_ffn=37,
        unet_channels=(32, 64), unet_layers=1, unet_head_dim=8, latent_size=8,
        vae_channels=(8, 16, 32, 32), vae_layers=1, vae_groups=8,
        beats=replace(ITER3_CONFIG, embed_dim=16, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                      encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4),
    ),
    "sd15": Architecture(
        token_dim=768, clip_layers=12, clip_heads=12, clip_ffn=3072,
        unet_channels=(320, 640, 1280, 1280), unet_layers=2, unet_head_dim=8, latent_size=64,
        vae_channels=(128, 256, 512, 512), vae_layers=2, vae_groups=32,
        beats=ITER3_CONFIG,
    ),
}

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
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "errors": "replace", **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def build_stable_diffusion(arch: Architecture, tokenizer_dir: Path):
    """A diffusers StableDiffusionPipeline with random weights and the official PNDM scheduler config."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=arch.token_dim, intermediate_size=arch.clip_ffn,
        num_hidden_layers=arch.clip_layers, num_attention_heads=arch.clip_heads, max_position_embeddings=77,
        hidden_act="quick_gelu", projection_dim=arch.token_dim, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    ))
    n = len(arch.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=arch.latent_size, in_channels=4, out_channels=4,
        block_out_channels=arch.unet_channels, layers_per_block=arch.unet_layers,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=arch.token_dim, attention_head_dim=arch.unet_head_dim,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=arch.latent_size * 8,
        block_out_channels=arch.vae_channels, layers_per_block=arch.vae_layers, norm_num_groups=arch.vae_groups,
        down_block_types=("DownEncoderBlock2D",) * len(arch.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(arch.vae_channels),
        scaling_factor=VAE_SCALING_FACTOR,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir), unet=unet,
        scheduler=PNDMScheduler(**SD1_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
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


def make_random(out: str | Path, arch: str = "tiny", seed: int = 0, force: bool = False) -> Path:
    """Write ``sd/``, ``beats.pt`` and ``embedder.bin`` under ``out``, atomically (built aside, then renamed)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out}: exists and is not empty", hint="pass --force to replace it, or choose another folder")
    with building_folder(out) as staging:
        torch.manual_seed(seed)
        write_clip_tokenizer(staging / "clip_tokenizer")
        build_stable_diffusion(spec, staging / "clip_tokenizer").save_pretrained(staging / "sd")
        # keep the hub's SD 1.x tokenizer layout (vocab.json + merges.txt) rather than transformers' re-save
        shutil.rmtree(staging / "sd" / "tokenizer")
        os.replace(staging / "clip_tokenizer", staging / "sd" / "tokenizer")
        torch.save(beats_checkpoint(spec.beats), staging / "beats.pt")
        embedder = Embedder(len(FEATURE_LAYERS) * spec.beats.encoder_embed_dim, spec.token_dim)
        torch.save(embedder.state_dict(), staging / "embedder.bin")
    return out
