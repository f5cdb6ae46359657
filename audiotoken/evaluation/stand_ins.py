"""Random-weight stand-ins of the evaluation's models, in their published formats (``make-random --eval``).

Place in the data flow: ``audiotoken.random_models.make_random(evaluation=True)`` -> ``write_random_eval_models``
writes ``DIR/eval/`` as ``evaluation.models`` expects ``--models DIR`` -> the tests and benchmarks evaluate with it.

- the two CLIPs: transformers folders like the Hub's (``config.json`` with the published configuration's fields, the
  weights under the repository's file name: ``pytorch_model.bin`` for ViT-B/32, ``model.safetensors`` for ViT-L/14,
  and the real CLIP tokenizer, copied from the Stable Diffusion stand-in's); ``tiny`` CLIPs, or at ``sd15`` the
  real ViT-B/32 and ViT-L/14 sizes (benchmarks);
- Wav2CLIP (ResNet-18) and the FID Inception have fixed architectures, so theirs are full size (45 MB and 95 MB):
  state dicts keyed as the published files.

Every value comes from ``random_state``, one rule over names and shapes drawn from a seeded generator, not from any
library's initialisation: the same seed writes the same files whatever the library versions, which the tests'
known answers rely on. Values are rounded to half precision, so a stand-in converts to any published format
(OpenAI's CLIP files are fp16) without change.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audiotoken.evaluation.models import CLIP_TOKENIZER, MODELS
from audiotoken.evaluation.networks import FidInception, Wav2Clip
from runtime.atomic import building_folder
from runtime.errors import ConfigError


@dataclass(frozen=True)
class ClipSize:
    """A CLIP's sizes (widths are multiples of 64: OpenAI's CLIPs have one attention head per 64 channels)."""

    embed_dim: int
    vision_width: int
    vision_layers: int
    patch_size: int
    image_size: int
    text_width: int
    text_layers: int


CLIP_SIZES = {
    "tiny": {
        "clip_b32": ClipSize(512, 64, 2, 8, 32, 64, 2),  # 512: Wav2CLIP embeds into ViT-B/32's space
        "clip_l14": ClipSize(48, 64, 2, 7, 28, 64, 2),
    },
    "sd15": {  # the real ViT-B/32 and ViT-L/14 sizes, for benchmarks
        "clip_b32": ClipSize(512, 768, 12, 32, 224, 512, 12),
        "clip_l14": ClipSize(768, 1024, 24, 14, 224, 768, 12),
    },
}


def clip_config(size: ClipSize):
    """A transformers ``CLIPConfig`` of ``size`` with the published configurations' other fields (QuickGELU, 77
    tokens, the 49,408-token vocabulary, and their token ids: bos 0, eos 2, pad 1, as the Hub's config.json has)."""
    from transformers import CLIPConfig

    common = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": size.embed_dim}
    return CLIPConfig(
        text_config={
            **common,
            "hidden_size": size.text_width,
            "intermediate_size": 4 * size.text_width,
            "num_attention_heads": size.text_width // 64,
            "num_hidden_layers": size.text_layers,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            **common,
            "hidden_size": size.vision_width,
            "intermediate_size": 4 * size.vision_width,
            "num_attention_heads": size.vision_width // 64,
            "num_hidden_layers": size.vision_layers,
            "image_size": size.image_size,
            "patch_size": size.patch_size,
        },
        projection_dim=size.embed_dim,
    )


def random_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random values for every entry of ``module``'s state dict, by name and shape (module docstring): matrices and
    kernels He-scaled (std sqrt(2 / fan-in): features keep their scale through the Inception's 94 layers), norm
    scales 1 + N(0, 0.1), running variances in [1, 1.1], other vectors N(0, 0.1); integer buffers and the
    spectrogram's window as they are."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in module.state_dict().items():
        if not value.is_floating_point() or name.endswith("spectrogram.window"):
            state[name] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=generator)
        if value.ndim >= 2:
            new = noise * (2.0 / value[0].numel()) ** 0.5
        elif name.endswith("running_var"):
            new = 1 + 0.1 * torch.rand(value.shape, generator=generator)
        elif name.endswith("weight"):
            new = 1 + 0.1 * noise
        else:
            new = 0.1 * noise
        state[name] = new.half().float()
    return state


def with_random_state(module: nn.Module, seed: int) -> nn.Module:
    module.load_state_dict(random_state(module, seed))
    return module


def write_clip(folder: Path, key: str, size: ClipSize, tokenizer: Path, seed: int) -> None:
    """A CLIP folder as the Hub has it: config.json, the weights under the repository's name, the tokenizer."""
    from safetensors.torch import save_file
    from transformers import CLIPModel

    model = with_random_state(CLIPModel(clip_config(size)), seed)
    folder.mkdir()
    model.config.save_pretrained(folder)
    weights = MODELS[key].hub_files[0]
    state = {name: value.contiguous() for name, value in model.state_dict().items()}
    if weights.endswith(".safetensors"):
        save_file(state, folder / weights, metadata={"format": "pt"})
    else:
        torch.save(state, folder / weights)
    for name in CLIP_TOKENIZER:
        if (tokenizer / name).is_file():
            shutil.copyfile(tokenizer / name, folder / name)


def write_random_eval_models(out: str | Path, tokenizer: Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Write the four models of ``evaluation.models.MODELS`` under ``out`` (atomically) with random weights, in
    their published formats; ``tokenizer`` is a CLIP tokenizer folder (vocab.json, merges.txt, ...)."""
    if arch not in CLIP_SIZES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(CLIP_SIZES)}")
    out = Path(out)
    with building_folder(out) as staging:
        for key, size in CLIP_SIZES[arch].items():
            write_clip(staging / MODELS[key].name, key, size, Path(tokenizer), seed)
        torch.save(random_state(Wav2Clip(), seed), staging / MODELS["wav2clip"].name)
        torch.save(random_state(FidInception(), seed), staging / MODELS["inception"].name)
    return out
