"""One declarative description per exported network: wrapper module, sample input, fp32 islands, and its I/O.

Place in the data flow: ``export.sources`` loads the PyTorch models -> ``describe_networks`` -> ``export.builder``
exports each description to ONNX (``export.onnx_file``), validates it on its sample (``export.parity``) and
records its I/O in the manifest. The I/O comes from the engine contract (``runtime.contract``), its one owner:
static shapes at batch 1, but for the UNet's batch, which is the bundle's (2 with classifier-free guidance, 1
without, or an open axis for both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audiotoken.text import TextConditioner, slot_ids, tokenize
from export.sources import Sources
from runtime.audio import load_audio
from runtime.contract import (
    AUDIO_ENCODER,
    DYNAMIC,
    LATENT_CHANNELS,
    N_SAMPLES,
    SLOT_PLACEHOLDERS,
    TEXT_ENCODER,
    TOKEN_SLOTS,
    UNET,
    VAE_DECODER,
    VAE_ENCODER,
    VAE_FACTOR,
    Dims,
    EngineContract,
    TensorSpec,
    engine_contracts,
)
from runtime.errors import CheckpointError, ConfigError

FIRST_TIMESTEP = 981.0  # the first UNet call of the official PNDM-50 schedule (docs/method.md#the-official-recipe)
SEED = 0


@dataclass(frozen=True)
class Network:
    """What ``export`` needs to know about one engine; ``build`` and ``sample`` run only when it is exported."""

    contract: EngineContract  # name, inputs, outputs
    build: Callable[[], nn.Module]  # the fp32 wrapper module, in eval mode, whose forward is the engine
    sample: Callable[[], tuple[torch.Tensor, ...]]  # validation inputs, one per ``inputs`` entry
    sample_note: str  # what the sample is, for the manifest
    fp32_scopes: tuple[str, ...] = ()  # node-name prefixes that stay fp32 in fp16 engines (with all they read)
    fp32_ops: tuple[str, ...] = ()  # op types that stay fp32 in fp16 engines
    # int8 bundles quantize its linear layers and convolutions (export.int8): the UNet, run every step, the audio
    # encoder's transformer (half of a 4-step fast picture's time outside the UNet) and TAESD's decoder
    int8: bool = False
    int8_fp32_scopes: tuple[str, ...] = ()  # node-name prefixes that stay fp32 in int8 engines
    # quantized statically instead (export.int8.to_calibrated_int8): activation scales fixed at export by running
    # these inputs (one tuple per ``inputs`` entry each); TAESD's decoder of an int8 bundle
    int8_calibration: Callable[[], list[tuple[torch.Tensor, ...]]] | None = None
    # ONNX Runtime gets its attention as fused nodes (export.attention): int8 outright, fp32 as a variant
    fused_attention: bool = False
    # what is traced to ONNX in place of the reference module (the same products, rearranged for the engines; the
    # reference output every engine is checked against is the unchanged module's)
    traced_form: Callable[[nn.Module], nn.Module] | None = None

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.contract.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.contract.outputs


class UNetEngine(nn.Module):
    """(sample [N, 4, h, w], timestep [1], encoder_hidden_states [N, 77, D]) -> noise_pred [N, 4, h, w]; N = 2 with
    classifier-free guidance, 1 without."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet  # node names start with /unet/, so the fp32 scope /unet/time_proj/ finds the timestep path

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]  # [2B, 4, h, w]


class SplitGEGLU(nn.Module):
    """diffusers' GEGLU (``value, gate = proj(x).chunk(2, -1)``; ``value * gelu(gate)``) with the projection's two
    halves as two Linear layers. The products are the same, but the traced graph no longer slices the 2 x 1280-wide
    product apart, a 42 MB copy per call at 512x512 (45 ms of a 2-core int8 UNet step); int8 bundles quantize the
    two halves with the same per-channel scales as the whole."""

    def __init__(self, proj: nn.Linear):
        super().__init__()
        value_weight, gate_weight = proj.weight.detach().chunk(2, dim=0)  # [N, K] each
        value_bias, gate_bias = (None, None) if proj.bias is None else proj.bias.detach().chunk(2)  # [N] each
        self.value = self.half(value_weight, value_bias)
        self.gate = self.half(gate_weight, gate_bias)

    @staticmethod
    def half(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.weight = nn.Parameter(weight.clone(), requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias.clone(), requires_grad=False)
        return linear

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.value(hidden_states) * nn.functional.gelu(self.gate(hidden_states))  # [B, T, N]


def split_geglus(module: nn.Module) -> nn.Module:
    """``module`` with each of diffusers' GEGLU activations replaced in place by its ``SplitGEGLU`` form."""
    from diffusers.models.activations import GEGLU

    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is GEGLU:  # exactly: a subclass may compute something else
                setattr(parent, name, SplitGEGLU(child.proj))
    return module


class VaeDecoderEngine(nn.Module):
    """latent [B, 4, h, w] (already divided by the scaling factor) -> image [B, 3, 8h, 8w], raw in about [-1, 1]."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent, return_dict=False)[0]  # [B, 3, H, W]


class VaeEncoderEngine(nn.Module):
    """image [B, 3, H, W] in [-1, 1] -> latent [B, 4, h, w], not yet times the scaling factor: the SD VAE's posterior
    mean, or the tiny autoencoder's latents."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        encoded = self.vae.encode(image)
        return encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mean  # [B, 4, h, w]


def autoencoder_factor(config: dict) -> int:
    """Picture pixels per latent pixel of an autoencoder, from its config: the SD VAE halves the size in every block
    but the last; the tiny one upsamples by ``upsampling_scaling_factor`` in every decoder block but the first."""
    if "decoder_block_out_channels" in config:  # AutoencoderTiny
        return config["upsampling_scaling_factor"] ** (len(config["decoder_block_out_channels"]) - 1)
    return 2 ** (len(config["block_out_channels"]) - 1)


def read_dims(sources: Sources, height: int | None, width: int | None, unet_batches: tuple[int, ...] = (2,)) -> Dims:
    """Dimensions from the model configs; the default image size is ``unet.sample_size * vae_scale_factor``."""
    unet = sources.unet_config()
    autoencoders = [(sources.sd.ref, sources.sd.vae_config())]
    if sources.tiny_vae is not None:
        autoencoders.append((sources.tiny_vae, sources.autoencoder_config()))
    for ref, vae in autoencoders:
        factor = autoencoder_factor(vae)
        if (factor, vae["latent_channels"]) != (VAE_FACTOR, LATENT_CHANNELS):
            raise CheckpointError(
                f"{ref}: its autoencoder has {vae['latent_channels']} latent channels at 1/{factor} of the picture's "
                f"size; the engine contract is {LATENT_CHANNELS} channels at 1/{VAE_FACTOR}",
                hint="use a Stable Diffusion 1.x or 2.x model, and TAESD for it (madebyollin/taesd)",
            )
    token_dim = sources.sd.text_width()
    for what, width_found in (
        ("the UNet's cross-attention", unet["cross_attention_dim"]),
        ("the embedder", sources.embedder_width()),
    ):
        if width_found != token_dim:
            raise CheckpointError(
                f"{what} is {width_found}-wide but the text encoder is {token_dim}-wide (D)",
                hint="use an embedder and a Stable Diffusion of the same family (D = 768 for SD 1.x, 1024 for SD 2.x)",
            )
    height = height or unet["sample_size"] * factor
    width = width or unet["sample_size"] * factor
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ConfigError(
            f"image size {height}x{width}: expected positive multiples of {factor} (the VAE's scale factor)",
            hint="e.g. --height 512 --width 512",
        )
    return Dims(token_dim, height, width, unet_batches, TOKEN_SLOTS)


def seeded() -> torch.Generator:
    """A fresh generator per sample, so each engine's sample is the same whatever was exported before it."""
    return torch.Generator().manual_seed(SEED)


def audio_sample(clip: Path | None) -> torch.Tensor:
    """A real clip when given (the fbank and BEATs see real sound), else seeded noise at a speech-like level."""
    if clip is not None:
        return torch.from_numpy(load_audio(clip))[None]  # [1, 160000]
    return torch.randn(1, N_SAMPLES, generator=seeded()) * 0.1  # [1, 160000]; 10 sigma from +-1


def pink_pictures(shape: list[int], count: int) -> torch.Tensor:
    """``count`` pictures [count, 3, H, W] in [-1, 1] whose amplitude spectrum falls as 1/f (power as 1/f^2), as
    natural pictures' does: smooth regions, edges and texture at every scale (seeded)."""
    height, width = shape[-2:]
    g = seeded()
    frequency = torch.sqrt(
        torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.rfftfreq(width)[None, :] ** 2
    )  # [H, W/2+1]
    spectrum = torch.randn(count, 3, *frequency.shape, dtype=torch.complex64, generator=g)  # [count, 3, H, W/2+1]
    pictures = torch.fft.irfft2(spectrum / frequency.clamp(min=1 / max(height, width)), s=(height, width))
    low = pictures.amin(dim=(1, 2, 3), keepdim=True)
    high = pictures.amax(dim=(1, 2, 3), keepdim=True)
    return (pictures - low) / (high - low) * 2 - 1  # [count, 3, H, W], each picture spanning [-1, 1]


def decoder_calibration(sources: Sources, shape: dict[str, list[int]], scaling_factor: float) -> list[tuple]:
    """Latents to calibrate an int8 tiny decoder on: the tiny encoder's latents of 1/f pictures (what decoded
    pictures look like to it) and seeded noise latents (a one-step estimate can be rough), batch 1 each."""
    encoder = VaeEncoderEngine(sources.autoencoder()).eval()
    with torch.no_grad():
        latents = [encoder(picture[None]) for picture in pink_pictures(shape["image"], 8)]  # [1, 4, h, w] each
    g = seeded()
    noise = [torch.randn([1, *shape["latent"][1:]], generator=g) / scaling_factor for _ in range(4)]  # [1, 4, h, w]
    return [(latent,) for latent in latents + noise]


def describe_networks(sources: Sources, dims: Dims, template: str, clip: Path | None) -> list[Network]:
    """The five engines in data order, with their I/O from the engine contract at ``dims``."""
    contracts = engine_contracts(dims)
    sample_batch = max(dims.unet_batches)  # an open batch axis is traced and validated at 2 (and 1: export.parity)
    shape = {spec.name: spec.at_batch(sample_batch) for contract in contracts.values() for spec in contract.inputs}
    scaling_factor = sources.autoencoder_config()["scaling_factor"]

    def text_conditioner() -> nn.Module:
        ids = slot_ids(sources.sd.tokenizer())[: dims.token_slots]
        return TextConditioner(sources.sd.text_encoder(eager_attention=True), ids).eval()

    # the sample prompt holds every slot, so the parity check sees each token spliced at its own placeholder
    sample_prompt = template + "".join(f", {token}" for token in SLOT_PLACEHOLDERS[1 : dims.token_slots])

    def text_sample() -> tuple[torch.Tensor, ...]:
        ids = tokenize(sources.sd.tokenizer(), [sample_prompt])  # [1, 77]
        return ids, torch.randn(shape["audio_token"], generator=seeded())  # [1, 77], [1, S, D] (or [1, D])

    def unet_sample() -> tuple[torch.Tensor, ...]:
        g = seeded()
        noisy = torch.randn(shape["sample"], generator=g)  # [N, 4, h, w]
        return (
            noisy,
            torch.tensor([FIRST_TIMESTEP]),
            torch.randn(shape["encoder_hidden_states"], generator=g),
        )  # [N, 4, h, w], [1], [N, 77, D]

    return [
        Network(
            contracts[AUDIO_ENCODER],
            build=sources.audio_encoder,
            sample=lambda: (audio_sample(clip),),
            sample_note=f"clip {clip.name}" if clip else f"noise seed {SEED}",
            fp32_scopes=("/fbank/",),  # frame power reaches 1e13: everything up to the log stays fp32
            fp32_ops=("LayerNormalization", "Softmax"),
            int8=True,
            # BEATs' 12 layers go int8; the fbank, the patch embedding that reads it and the trained embedder that
            # writes the token stay fp32 (measured, random weights: token error 0.65% of its scale, 535 -> 320 ms)
            int8_fp32_scopes=("/fbank/", "/beats/patch_embedding/", "/embedder/"),
        ),
        Network(
            contracts[TEXT_ENCODER],
            build=text_conditioner,
            sample=text_sample,
            sample_note=f"prompt {sample_prompt!r}, token seed {SEED}",
            fp32_ops=("LayerNormalization", "Softmax"),
        ),
        Network(
            contracts[UNET],
            build=lambda: UNetEngine(sources.unet()),
            sample=unet_sample,
            sample_note=f"noise seed {SEED}, timestep {FIRST_TIMESTEP:g}",
            # sin/cos of timestep x frequency needs fp32 (fp16 resolves 981 only to 0.5); the big softmaxes stay fp16
            fp32_scopes=("/unet/time_proj/",),
            fp32_ops=("LayerNormalization",),
            int8=True,
            int8_fp32_scopes=("/unet/conv_in/", "/unet/conv_out/"),  # reads the latents; writes the prediction
            # the matcher reads static head shapes; an open batch axis has none
            fused_attention=dims.unet_batch != DYNAMIC,
            traced_form=split_geglus,
        ),
        Network(
            contracts[VAE_DECODER],
            build=lambda: VaeDecoderEngine(sources.autoencoder()),
            sample=lambda: (torch.randn(shape["latent"], generator=seeded()) / scaling_factor,),
            sample_note=f"noise seed {SEED} / scaling factor",
            # TAESD (convolutions and ReLUs, its input clamped to +-3) goes int8, calibrated: about 2x faster at 512x512
            # on 2 cores, where it was a quarter of a one-step picture; the first and last convolutions stay fp32
            int8=sources.tiny_vae is not None,
            int8_calibration=lambda: decoder_calibration(sources, shape, scaling_factor),
        ),
        Network(
            contracts[VAE_ENCODER],
            build=lambda: VaeEncoderEngine(sources.autoencoder()),
            sample=lambda: (torch.rand(shape["image"], generator=seeded()) * 2 - 1,),
            sample_note=f"uniform [-1, 1) seed {SEED}",
        ),
    ]
