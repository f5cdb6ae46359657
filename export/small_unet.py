"""A distilled small UNet in place of Stable Diffusion's own (``export --unet``): the check that it takes the same
conditioning, and which layer of the SD's UNet each of its layers was distilled from.

BK-SDM (nota-ai/bk-sdm-base, -small, -tiny, distilled from SD 1.4; their BK-SDM code) and Segmind's
small-sd and tiny-sd (their distill-sd code) remove blocks from SD 1.x's UNet and train what is left to
imitate it, each kept layer starting from the SD layer in its place:
- every stage keeps fewer residual/attention pairs (``layers_per_block``): a down stage its first ones; an up stage,
  which holds one pair more, its first ones and its last (the one reading the skip of the stage above, whose width
  only the last pair has);
- Small and Tiny remove the mid block; Tiny also the innermost stage (the last down stage, the first up stage), so
  that its up stage ``i`` is the SD's up stage ``i + 1``.
``distilled_from`` gives, for a layer of such a UNet, the name of the SD layer it came from: for BK-SDM the copy table
its training script publishes (``copy_weight_from_teacher``; tests/test_small_unet.py compares), for Segmind the
layers its ``prepare_unet`` keeps.

Place in the data flow: ``export.sources`` checks the UNet's config (``check_conditioning``) before any export work;
``export.lora`` places a LoRA made for the SD's UNet onto the small one through ``distilled_from``.
"""

from __future__ import annotations

from runtime.contract import LATENT_CHANNELS
from runtime.errors import CheckpointError, shown

UNET_CLASS = "UNet2DConditionModel"
HINT = "pass a UNet distilled from this Stable Diffusion's (BK-SDM, Segmind's small-sd or tiny-sd for SD 1.x)"


def check_conditioning(ref: str, config: dict, sd_unet: dict, text_width: int) -> None:
    """The UNet at ``ref`` (its ``config``) takes what Stable Diffusion's own (config ``sd_unet``) takes: the text
    encoder's states (``text_width`` wide), the latents' 4 channels, latents of the same size; else one line naming
    ``--unet``."""
    problems = (
        (config.get("_class_name", UNET_CLASS) != UNET_CLASS, f"it is a {shown(config.get('_class_name'))}"),
        (
            config.get("cross_attention_dim") != text_width,
            f"its cross_attention_dim is {shown(config.get('cross_attention_dim'))}, the text encoder is "
            f"{text_width}-wide (D)",
        ),
        (
            (config.get("in_channels"), config.get("out_channels")) != (LATENT_CHANNELS, LATENT_CHANNELS),
            f"it takes {shown(config.get('in_channels'))} and gives {shown(config.get('out_channels'))} latent "
            f"channels, the autoencoder's latents have {LATENT_CHANNELS}",
        ),
        (
            config.get("sample_size") != sd_unet["sample_size"],
            f"its sample_size is {shown(config.get('sample_size'))}, Stable Diffusion's UNet's "
            f"{sd_unet['sample_size']} (latents of another picture size)",
        ),
    )
    for failed, problem in problems:
        if failed:
            raise CheckpointError(f"--unet {ref}: {problem}; it cannot stand in for this Stable Diffusion's UNet", HINT)


def up_stage_pairs(config: dict, stage: int) -> int:
    """Residual/attention pairs of up stage ``stage`` (diffusers: the mirrored down stage's ``layers_per_block``
    + 1)."""
    per_block = config["layers_per_block"]
    return (per_block if isinstance(per_block, int) else list(reversed(per_block))[stage]) + 1


def distilled_from(name: str, config: dict, sd_unet: dict) -> str:
    """The name of the layer of Stable Diffusion's UNet (config ``sd_unet``) that layer ``name`` of the block-removed
    UNet of ``config`` was distilled from (its own name but in the up stages, shifted by the stages removed, and in an
    up stage's last pair); a prefix of a layer name maps as the layer would (``up_blocks.0.resnets.1.``)."""
    parts = name.split(".")
    if parts[0] != "up_blocks" or len(parts) < 2:
        return name
    stage = int(parts[1])
    sd_stage = stage + len(sd_unet["up_block_types"]) - len(config["up_block_types"])
    parts[1] = str(sd_stage)
    if len(parts) > 3 and parts[2] in ("resnets", "attentions") and parts[3]:
        pair, pairs = int(parts[3]), up_stage_pairs(config, stage)
        if pair == pairs - 1:  # the last pair reads the skip of the stage above: the SD stage's last pair
            parts[3] = str(up_stage_pairs(sd_unet, sd_stage) - 1)
    return ".".join(parts)
