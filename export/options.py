"""What ``audiotoken-rt export`` can be asked for: one frozen dataclass, torch-free, whose field help is the CLI's.

Place in the data flow: the command line (``export.cli``) or a Python caller fills ``ExportOptions`` ->
``export.builder.export_bundle``. Kept apart from the builder so the command's help and defaults need no torch.
``--fast`` fills the LoRA, the tiny autoencoder and the UNet batch from ``runtime.sampling.FAST``, the preset
``generate --fast`` draws with (``ExportOptions.with_preset``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from runtime.contract import DEFAULT_TEMPLATE, GUIDED_BATCH, SINGLE_BATCH, UNET_BATCHES
from runtime.errors import ConfigError
from runtime.sampling import FAST


def parse_unet_batches(text: str | None, lcm_lora: str | None) -> tuple[int, ...]:
    """``--unet-batch``: "1", "2" or "1,2" -> (1,), (2,) or (1, 2); by default 1 with LCM-LoRA (guidance 1), else 2."""
    if text is None:
        return (SINGLE_BATCH,) if lcm_lora else (GUIDED_BATCH,)
    try:
        batches = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        batches = ()
    if not batches or not set(batches) <= set(UNET_BATCHES):
        raise ConfigError(
            f"--unet-batch {text!r}: expected 1, 2 or 1,2", hint="2 for guidance above 1, 1 for guidance 1"
        )
    return batches


@dataclass(frozen=True)
class ExportOptions:
    """The export's sources, output and choices; ``help`` of each field is the command-line option's help."""

    sd: str = field(
        metadata={"help": "Stable Diffusion: a hub id (CompVis/stable-diffusion-v1-4) or a local diffusers folder."}
    )
    beats: Path = field(
        metadata={
            "help": "The BEATs checkpoint (.pt) the embedder was trained on: the official iter3+ AS2M fine-tuned cpt2."
        }
    )
    embedder: Path = field(metadata={"help": "AudioToken embedder weights (embedder_learned_embeds.bin)."})
    out: Path = field(metadata={"help": "Bundle folder to write, e.g. engines/sd14."})
    height: int | None = field(
        default=None, metadata={"help": "Picture height in pixels (default: the UNet's sample_size x 8)."}
    )
    width: int | None = field(
        default=None, metadata={"help": "Picture width in pixels (default: the UNet's sample_size x 8)."}
    )
    precision: str = field(
        default="fp32",
        metadata={
            "help": "fp32; fp16 for GPUs (the fbank, LayerNorm and softmax stay fp32); "
            "int8 for CPUs (the linear layers and convolutions of the UNet and of BEATs)."
        },
    )
    template: str = field(
        default=DEFAULT_TEMPLATE, metadata={"help": "The bundle's prompt template, holding <*> once."}
    )
    fast: bool = field(
        default=False,
        metadata={
            "help": f"The bundle `generate {FAST.flag}` draws with ({FAST.sampling.describe()}): --lcm-lora "
            f"{FAST.lora}, --tiny-vae {FAST.tiny_vae} and --unet-batch "
            f"{','.join(map(str, FAST.unet_batches))} where not given."
        },
    )
    lcm_lora: str | None = field(
        default=None,
        metadata={
            "help": f"Fuse this LoRA into the UNet: LCM-LoRA ({FAST.lora}, a local folder or .safetensors file) for "
            f"the fast recipe, {FAST.sampling.describe()}."
        },
    )
    lora_scale: float = field(default=1.0, metadata={"help": "The scale the LoRA is fused at."})
    tiny_vae: str | None = field(
        default=None,
        metadata={
            "help": "Take the decoder and encoder from this tiny autoencoder (TAESD: madebyollin/taesd, or a local "
            "diffusers AutoencoderTiny folder) instead of Stable Diffusion's."
        },
    )
    unet: str | None = field(
        default=None,
        metadata={
            "help": "Take the UNet from this one distilled from Stable Diffusion's (BK-SDM: nota-ai/bk-sdm-tiny, a "
            "local diffusers folder holding unet/, or a UNet folder) instead of Stable Diffusion's own."
        },
    )
    unet_batch: str | None = field(
        default=None,
        metadata={
            "help": "The UNet's batch: 2 for guidance above 1, 1 for guidance 1 (half the work per step), 1,2 for "
            "both (a dynamic batch axis). Default: 1 with --lcm-lora, else 2."
        },
    )
    token_merging: float | None = field(
        default=None,
        metadata={
            "help": "int8 bundles: merge this share of the tokens (ToMe, 0.5 usual, at most 0.75) before each "
            "self-attention at the UNet's highest resolution, which then runs on the rest (an approximation: the "
            "UNet is checked against the unmerged one at int8's tolerance). Default: none."
        },
    )
    sample_clip: Path | None = field(
        default=None, metadata={"help": "A real clip to validate audio_encoder on (default: seeded noise)."}
    )
    tensorrt: bool = field(
        default=False, metadata={"help": "Also build fp16 TensorRT plans for this GPU (needs the trt extra)."}
    )
    force: bool = field(default=False, metadata={"help": "Rebuild even if OUT is up to date, or holds another bundle."})
    update: bool = field(
        default=False,
        metadata={
            "help": "Rebuild OUT if it holds a bundle that is not up to date (other sources, options or code); "
            "keep it if it is."
        },
    )
    allow_parity_error: bool = field(
        default=False,
        metadata={"help": "Keep an engine that differs from PyTorch beyond tolerance (recorded in the manifest)."},
    )

    def with_preset(self) -> ExportOptions:
        """With ``fast``: the fast preset's LoRA, tiny autoencoder and UNet batches where these options leave them
        unset; else these options as they are."""
        if not self.fast:
            return self
        return replace(
            self,
            lcm_lora=self.lcm_lora or FAST.lora,
            tiny_vae=self.tiny_vae or FAST.tiny_vae,
            unet_batch=self.unet_batch or ",".join(map(str, FAST.unet_batches)),
        )
