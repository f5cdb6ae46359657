"""One declarative description per exported network: I/O contract, wrapper module, sample input, fp32 islands.

Place in the data flow: ``export.sources`` loads the PyTorch models -> ``describe_networks`` -> ``export.builder``
exports each description to ONNX (``export.onnx_file``), validates it on its sample (``export.parity``) and
records its I/O in the manifest. The I/O contract is DESIGN.md's table, with static shapes and batch 1
(the UNet takes the unconditional and conditional halves together, so its batch is 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audiotoken.text import PLACEHOLDER, TextConditioner, tokenize
from export.sources import Sources
from runtime.audio import N_SAMPLES, load_audio
from runtime.bundle import TensorSpec
from runtime.errors import CheckpointError, ConfigError

TEXT_LENGTH = 77  # CLIP's context
FIRST_TIMESTEP = 981.0  # the first UNet call of the official PNDM-50 schedule (spec 5.4)
SEED = 0


@dataclass(frozen=True)
class Network:
    """What ``export`` needs to know about one engine; ``build`` and ``sample`` run only when it is exported."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    build: Callable[[], nn.Module]  # the fp32 wrapper module, in eval mode, whose forward is the engine
    sample: Callable[[], tuple[torch.Tensor, ...]]  # validation inputs, one per ``inputs`` entry
    sample_note: str  # what the sample is, for the manifest
    fp32_scopes: tuple[str, ...] = ()  # node-name prefixes that stay fp32 in fp16 engines (with all they read)
    fp32_ops: tuple[str, ...] = ()  # op types that stay fp32 in fp16 engines
    int8: bool = False  # int8 bundles quantize its linear layers and convolutions (export.int8); only the UNet, run every step
    int8_fp32_scopes: tuple[str, ...] = ()  # node-name prefixes that stay fp32 in int8 engines


class UNetEngine(nn.Module):
    """(sample [2B, 4, h, w], timestep [1], encoder_hidden_states [2B, 77, D]) -> noise_pred [2B, 4, h, w]."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet  # node names start with /unet/, so the fp32 scope /unet/time_proj/ finds the timestep path

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]  # [2B, 4, h, w]


class VaeDecoderEngine(nn.Module):
    """latent [B, 4, h, w] (already divided by the scaling factor) -> image [B, 3, 8h, 8w], raw in about [-1, 1]."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent, return_dict=False)[0]  # [B, 3, H, W]


class VaeEncoderEngine(nn.Module):
    """image [B, 3, H, W] in [-1, 1] -> latent [B, 4, h, w]: the posterior mean, not yet times the scaling factor."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mean  # [B, 4, h, w]


@dataclass(frozen=True)
class Dims:
    """The static sizes of a bundle: D, image and latent sizes."""

    token_dim: int
    height: int
    width: int
    vae_factor: int  # image pixels per latent pixel: 2 ** (VAE blocks - 1) = 8
    latent_channels: int

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.vae_factor, self.width // self.vae_factor


def read_dims(sources: Sources, height: int | None, width: int | None) -> Dims:
    """Dimensions from the model configs; the default image size is ``unet.sample_size * vae_scale_factor``."""
    unet, vae = sources.unet_config(), sources.vae_config()
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    token_dim = sources.text_width()
    for what, width_found in (("the UNet's cross-attention", unet["cross_attention_dim"]), ("the embedder", sources.embedder_width())):
        if width_found != token_dim:
            raise CheckpointError(f"{what} is {width_found}-wide but the text encoder is {token_dim}-wide (D)",
                                  hint="use an embedder and a Stable Diffusion of the same family (D = 768 for SD 1.x, 1024 for SD 2.x)")
    height = height or unet["sample_size"] * factor
    width = width or unet["sample_size"] * factor
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ConfigError(f"image size {height}x{width}: expected positive multiples of {factor} (the VAE's scale factor)",
                          hint="e.g. --height 512 --width 512")
    return Dims(token_dim, height, width, factor, vae["latent_channels"])


def float_spec(name: str, *shape: int) -> TensorSpec:
    return TensorSpec(name, "float32", tuple(shape))


def seeded() -> torch.Generator:
    """A fresh generator per sample, so each engine's sample is the same whatever was exported before it."""
    return torch.Generator().manual_seed(SEED)


def audio_sample(clip: Path | None) -> torch.Tensor:
    """A real clip when given (the fbank and BEATs see real sound), else seeded noise at a speech-like level."""
    if clip is not None:
        return torch.from_numpy(load_audio(clip))[None]  # [1, 160000]
    return torch.randn(1, N_SAMPLES, generator=seeded()) * 0.1  # [1, 160000]; 10 sigma from +-1


def describe_networks(sources: Sources, dims: Dims, template: str, clip: Path | None) -> list[Network]:
    """The five engines in data order, with their I/O for batch 1 at ``dims``."""
    D = dims.token_dim
    h, w = dims.latent_size
    c = dims.latent_channels
    waveform, audio_token = float_spec("waveform", 1, N_SAMPLES), float_spec("audio_token", 1, D)
    input_ids = TensorSpec("input_ids", "int64", (1, TEXT_LENGTH))
    sample, timestep = float_spec("sample", 2, c, h, w), float_spec("timestep", 1)
    hidden = float_spec("encoder_hidden_states", 2, TEXT_LENGTH, D)
    latent, image = float_spec("latent", 1, c, h, w), float_spec("image", 1, 3, dims.height, dims.width)
    scaling_factor = sources.vae_config()["scaling_factor"]

    def text_conditioner() -> nn.Module:
        tokenizer = sources.tokenizer()
        return TextConditioner(sources.text_encoder(), tokenizer.convert_tokens_to_ids(PLACEHOLDER)).eval()

    def text_sample() -> tuple[torch.Tensor, ...]:
        ids = tokenize(sources.tokenizer(), [template])  # [1, 77]
        return ids, torch.randn(audio_token.shape, generator=seeded())  # [1, 77], [1, D]

    def unet_sample() -> tuple[torch.Tensor, ...]:
        g = seeded()
        noisy = torch.randn(sample.shape, generator=g)  # [2, 4, h, w]
        return noisy, torch.tensor([FIRST_TIMESTEP]), torch.randn(hidden.shape, generator=g)  # [1], [2, 77, D]

    return [
        Network(
            "audio_encoder", (waveform,), (audio_token,),
            build=sources.audio_encoder,
            sample=lambda: (audio_sample(clip),),
            sample_note=f"clip {clip.name}" if clip else f"noise seed {SEED}",
            fp32_scopes=("/fbank/",),  # frame power reaches 1e13: everything up to the log stays fp32
            fp32_ops=("LayerNormalization", "Softmax"),
        ),
        Network(
            "text_encoder", (input_ids, audio_token), (float_spec("text_embeddings", 1, TEXT_LENGTH, D),),
            build=text_conditioner,
            sample=text_sample,
            sample_note=f"template {template!r}, token seed {SEED}",
            fp32_ops=("LayerNormalization", "Softmax"),
        ),
        Network(
            "unet", (sample, timestep, hidden), (float_spec("noise_pred", 2, c, h, w),),
            build=lambda: UNetEngine(sources.unet()),
            sample=unet_sample,
            sample_note=f"noise seed {SEED}, timestep {FIRST_TIMESTEP:g}",
            # sin/cos of timestep x frequency needs fp32 (fp16 resolves 981 only to 0.5); the big softmaxes stay fp16
            fp32_scopes=("/unet/time_proj/",),
            fp32_ops=("LayerNormalization",),
            int8=True,
            int8_fp32_scopes=("/unet/conv_in/", "/unet/conv_out/"),  # reads the latents; writes the prediction
        ),
        Network(
            "vae_decoder", (latent,), (image,),
            build=lambda: VaeDecoderEngine(sources.vae()),
            sample=lambda: (torch.randn(latent.shape, generator=seeded()) / scaling_factor,),
            sample_note=f"noise seed {SEED} / scaling factor",
        ),
        Network(
            "vae_encoder", (image,), (float_spec("latent", 1, c, h, w),),
            build=lambda: VaeEncoderEngine(sources.vae()),
            sample=lambda: (torch.rand(image.shape, generator=seeded()) * 2 - 1,),
            sample_note=f"uniform [-1, 1) seed {SEED}",
        ),
    ]
