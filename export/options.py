"""What ``audiotoken-rt export`` can be asked for: one frozen dataclass, torch-free, whose field help is the CLI's.

Place in the data flow: the command line (``export.cli``) or a Python caller fills ``ExportOptions`` ->
``export.builder.export_bundle``. Kept apart from the builder so the command's help and defaults need no torch.
A LoRA (``--lora``) is fused with a distillation preset's recipe (``--preset``, ``runtime.sampling.PRESETS``; lcm by
default), which the manifest records for ``generate --fast``; ``--fast`` fills the LoRA, the tiny autoencoder and the
UNet batch from that preset where they are unset (``ExportOptions.with_preset``); ``--lcm-lora`` is ``--lora`` with
the lcm preset, as before there were others.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from runtime.contract import DEFAULT_TEMPLATE, GUIDED_BATCH, SINGLE_BATCH, UNET_BATCHES
from runtime.errors import ConfigError
from runtime.sampling import DEFAULT_PRESET, FAST, LORA_WEIGHTS_NAME, PRESETS, TAESD, Preset


def parse_unet_batches(text: str | None, lora: str | None) -> tuple[int, ...]:
    """``--unet-batch``: "1", "2" or "1,2" -> (1,), (2,) or (1, 2); by default 1 with a distillation LoRA (guidance
    1), else 2."""
    if text is None:
        return (SINGLE_BATCH,) if lora else (GUIDED_BATCH,)
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
            "help": "The bundle `generate --fast` draws with: the --preset's LoRA (its hub repo and file), --tiny-vae "
            f"{TAESD} and --unet-batch {','.join(map(str, FAST.unet_batches))} where not given."
        },
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "The distillation preset of the fused LoRA: its recipe (which the manifest records and "
            "`generate --fast` draws), its LoRA scale, and with --fast its LoRA: "
            + ", ".join(
                f"{preset.name} ({preset.lora_name}, {preset.sampling.describe()})" for preset in PRESETS.values()
            )
            + f"; docs/fast-path.md has their sources. Default: {DEFAULT_PRESET}."
        },
    )
    lora: str | None = field(
        default=None,
        metadata={
            "help": "Fuse this LoRA into the UNet: a hub id, a local folder holding the preset's file or "
            f"{LORA_WEIGHTS_NAME}, or a .safetensors file; the bundle draws with the --preset's recipe."
        },
    )
    lcm_lora: str | None = field(
        default=None,
        metadata={"help": f"The same as --lora with --preset {DEFAULT_PRESET} (LCM-LoRA: {FAST.lora})."},
    )
    lora_scale: float | None = field(
        default=None, metadata={"help": "The scale the LoRA is fused at (default: the preset's, 1 for each)."}
    )
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
            "both (a dynamic batch axis). Default: 1 with a LoRA, else 2."
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

    def distillation(self) -> Preset:
        """The distillation preset a fused LoRA draws with: ``--preset``'s, lcm by default (``--lcm-lora``'s)."""
        if self.lcm_lora is not None and self.lora is not None:
            raise ConfigError("--lcm-lora and --lora both name a LoRA; one is fused", hint="pass --lora alone")
        if self.lcm_lora is not None and self.preset not in (None, DEFAULT_PRESET):
            raise ConfigError(
                f"--lcm-lora is --lora with --preset {DEFAULT_PRESET}, not --preset {self.preset}",
                hint=f"pass --lora {self.lcm_lora} --preset {self.preset}",
            )
        name = self.preset or DEFAULT_PRESET
        if name not in PRESETS:
            raise ConfigError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
        return PRESETS[name]

    def with_preset(self) -> ExportOptions:
        """These options with the distillation preset's choices filled in: ``--lcm-lora`` read as ``--lora``; with
        ``fast``, the preset's LoRA (its hub repo), tiny autoencoder and UNet batches where unset; with a LoRA, the
        preset's scale where unset and its name in ``preset``. A ``--preset`` without a LoRA is refused."""
        preset = self.distillation()
        lora = self.lora or self.lcm_lora
        if self.fast:
            lora = lora or preset.lora
        if lora is None:
            if self.preset is not None:
                raise ConfigError(
                    f"--preset {self.preset}: names the recipe of a fused LoRA, and none is asked for",
                    hint="add --fast (the preset's own LoRA) or --lora SOURCE",
                )
            return self
        return replace(
            self,
            preset=preset.name,
            lora=lora,
            lcm_lora=None,
            lora_scale=preset.lora_scale if self.lora_scale is None else self.lora_scale,
            tiny_vae=self.tiny_vae or (preset.tiny_vae if self.fast else None),
            unet_batch=self.unet_batch or (",".join(map(str, preset.unet_batches)) if self.fast else None),
        )
