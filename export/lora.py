"""LoRA fusion at export: a distillation LoRA (LCM-LoRA, Hyper-SD, TCD, PCM: ``runtime.sampling.PRESETS``) baked into
the UNet's weights before ONNX export.

Place in the data flow: the export loads the UNet (``export.sources``) -> ``fuse_lora`` changes its weights in place,
``W' = W + scale * alpha / rank * up @ down`` on every adapted layer (for a Conv2d, ``up @ down`` over the flattened
kernel, reshaped to the kernel's [out, in, kh, kw]) -> the UNet is exported as usual, with no LoRA left in its graph;
the returned ``LoraInfo`` goes to the bundle manifest's recipe.

The LoRA is read as diffusers' ``StableDiffusionPipeline.load_lora_weights`` reads it: a hub id
(``latent-consistency/lcm-lora-sdv1-5``, ``ByteDance/Hyper-SD``) or a local folder, holding the preset's weights file
(``Hyper-SD15-1step-lora.safetensors``) or ``pytorch_lora_weights.safetensors``, or a ``.safetensors`` file, in any
layout diffusers understands (the kohya-style ``lora_unet_*.lora_down.weight`` / ``lora_up.weight`` / ``alpha`` of the
LCM-LoRA files, diffusers' ``unet.*.lora.down.weight`` / ``lora.up.weight``, or peft's ``unet.*.lora_A/lora_B``). A
layer whose file stores no alpha is fused at its rank (diffusers' reading), or at the alpha its preset was trained at
(``default_alpha``: PCM's 8) when the file carries no peft metadata either.

diffusers and peft do the fusion, on the bare UNet: ``StableDiffusionLoraLoaderMixin.lora_state_dict`` converts the
file to diffusers' layout (with its alphas), ``load_lora_into_unet`` injects peft LoRA layers, ``unet.fuse_lora``
merges them and ``unet.unload_lora`` removes the then-empty adapters. What this module adds by hand is what they
leave out: resolving the source and hashing the file; checking, before anything is changed, that every layer of the
LoRA fits a layer of this UNet (diffusers warns and skips, or fails with a long multi-line message), so a LoRA for
another architecture is a one-line ``CheckpointError``; and handing peft each layer's alpha under its module name
(diffusers 0.42 keys a kohya file's attention alphas so that peft ignores them when alphas differ between layers).
Before merging, the adapters peft built are checked against the file (one per layer, its rank, its alpha).
Fuse into the fp32 UNet, before any cast to fp16.

Into a small UNet distilled from the SD's (``export --unet``, ``export.small_unet``), ``place_layers`` puts a LoRA made
for the SD's UNet where the distillation kept each of its layers (``distilled_from``: BK-SDM-Tiny's up stage 0 is the
SD's up stage 1); its layers in blocks the small UNet lacks are left out (``Placement.skipped``, which the export
reports), and a kept layer whose shapes disagree is refused. A LoRA each of whose layers names a layer of the small
UNet is taken as made for it, by name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from audiotoken.stable_diffusion import HUB_ID
from runtime.bundle import file_sha256
from runtime.errors import CheckpointError, first_line
from runtime.sampling import LORA_WEIGHTS_NAME

ADAPTER = "fused_lora"
HINT = (
    "pass a LoRA for this Stable Diffusion's UNet: a .safetensors file, a folder holding "
    f"{LORA_WEIGHTS_NAME}, or a hub id such as latent-consistency/lcm-lora-sdv1-5"
)


@dataclass(frozen=True)
class LoraInfo:
    """What the bundle manifest records of a fused LoRA."""

    source: str  # as the user gave it (hub id or path)
    sha256: str  # of the weights file
    scale: float  # the user's multiplier on top of alpha / rank
    ranks: tuple[int, ...]  # the distinct ranks of its layers, ascending
    alphas: tuple[float, ...]  # the distinct alphas (alpha = rank where the file stores none)
    layers: int  # how many UNet layers were changed
    skipped: int = 0  # layers of the LoRA in blocks the (distilled) UNet lacks, left out


@dataclass(frozen=True)
class LoraLayer:
    """One adapted layer of the LoRA, named as in the UNet (``down_blocks.0.resnets.0.conv1``)."""

    module: str
    down: tuple[int, ...]  # lora_down / lora_A: [rank, in] or [rank, in, kh, kw]
    up: tuple[int, ...]  # lora_up / lora_B: [out, rank] or [out, rank, 1, 1]
    alpha: float | None  # None where the file stores none (diffusers then uses the rank, or its metadata)

    @property
    def rank(self) -> int:
        return self.down[0]


@dataclass(frozen=True)
class Placement:
    """Where a LoRA's layers go in a UNet: the UNet layer each fused one changes (by its name in the file)."""

    file: Path
    layers: tuple[LoraLayer, ...]  # every UNet layer of the LoRA, named as in the file
    targets: dict[str, str]  # LoRA layer -> the UNet layer it changes; layers in blocks the UNet lacks are absent

    @property
    def skipped(self) -> int:
        return len(self.layers) - len(self.targets)

    @property
    def renamed(self) -> bool:
        """Whether the LoRA goes elsewhere than its own names say (placed onto a distilled UNet)."""
        return any(module != target for module, target in self.targets.items()) or self.skipped > 0


def lora_weights_file(source: str | Path, weights_name: str = LORA_WEIGHTS_NAME) -> Path:
    """The LoRA's weights file: a ``.safetensors`` file, or ``weights_name`` (a preset's file, a path in its repo) else
    ``pytorch_lora_weights.safetensors`` in a folder or from a hub repo."""
    path = Path(source)
    if path.is_file():
        return path
    names = list(dict.fromkeys((weights_name, LORA_WEIGHTS_NAME)))  # the preset's first; once when the same
    if path.is_dir():
        found = next((path / name for name in names if (path / name).is_file()), None)
        if found is None:
            raise CheckpointError(f"{source}: no {' or '.join(names)} in this folder", hint=HINT)
        return found
    if path.suffix == ".safetensors" or path.is_absolute() or not HUB_ID.match(str(source)):
        raise CheckpointError(f"{source}: LoRA file not found", hint=HINT)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    failure: Exception | None = None
    for name in names:
        try:
            return Path(hf_hub_download(repo_id=str(source), filename=name))
        except Exception as exc:  # the hub client raises many types (offline, not found, gated, HTTP)
            failure = exc
            if not isinstance(exc, EntryNotFoundError):  # only a file the repo lacks lets the next name be tried
                break
    assert failure is not None  # names is never empty
    raise CheckpointError(
        f"{source}: cannot fetch its {' or '.join(names)} from the model hub "
        f"({type(failure).__name__}: {first_line(failure)})",
        hint="check the id and the network, or pass a local LoRA file",
    ) from failure


def read_lora(file: Path) -> tuple[dict, dict | None, dict | None]:
    """diffusers' reading of the file: its tensors in diffusers' layout (``unet.<module>...``), alphas and metadata."""
    from diffusers import StableDiffusionPipeline
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({first_line(exc)})", hint=HINT) from exc
    if not any(re.search(r"lora_(down|up|A|B)\b|_lora\.(down|up)\.|\.lora\.(down|up)\.", k) for k in keys):
        raise CheckpointError(
            f"{file}: not a LoRA (no lora_down/lora_up or lora_A/lora_B weights; "
            f"it holds e.g. {keys[0] if keys else 'nothing'})",
            hint=HINT,
        )
    text = sorted(k for k in keys if k.startswith(("lora_te", "text_encoder")))
    if text:
        raise CheckpointError(
            f"{file}: also adapts the text encoder ({text[0]}, ...); only UNet LoRAs are fused",
            hint="pass a UNet-only LoRA such as LCM-LoRA",
        )
    try:
        return StableDiffusionPipeline.lora_state_dict(str(file), return_lora_metadata=True)
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"{file}: a LoRA layout diffusers cannot read ({first_line(exc)})", hint=HINT) from exc


def peft_module(diffusers_name: str) -> str | None:
    """The UNet module a diffusers-layout LoRA name belongs to (``...attn1.processor.to_q_lora.down.weight`` and
    ``...attn1.to_q.lora.down.weight`` -> ``...attn1.to_q``), as peft will name it; None if it names none."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    name = diffusers_name if diffusers_name.endswith(".weight") else diffusers_name + ".lora.down.weight"
    key = next(iter(convert_unet_state_dict_to_peft({name: None})))
    return key.removesuffix(".lora_A.weight") if key.endswith(".lora_A.weight") else None


def lora_layers(
    state: dict, alphas: dict | None, file: Path, default_alpha: float | None = None
) -> tuple[list[LoraLayer], dict[str, float]]:
    """The LoRA's UNet layers, named as peft names them in the UNet, and its alphas by those module names
    (``default_alpha``, where given, for each layer the file stores none of).

    diffusers names the alphas of a kohya file's attention layers after their old attention-processor keys
    (``...attn1.processor.to_q_lora.down.weight.alpha``), which its peft config then cannot match: such a layer
    would be fused with the most common alpha instead of its own. Keyed by module here, they reach peft intact.
    """
    from diffusers.utils import convert_unet_state_dict_to_peft

    unet_state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    if not unet_state:
        raise CheckpointError(
            f"{file}: holds no UNet LoRA layers (keys such as {next(iter(state), 'none')})", hint=HINT
        )
    peft_state = convert_unet_state_dict_to_peft(unet_state)
    module_alphas = {}
    for key, value in (alphas or {}).items():
        if not key.startswith("unet."):
            continue
        module = peft_module(key.removeprefix("unet.").removesuffix(".alpha"))
        if module is None or f"{module}.lora_A.weight" not in peft_state:
            raise CheckpointError(f"{file}: alpha {key} belongs to no layer of the LoRA", hint=HINT)
        module_alphas[module] = float(value)
    layers = []
    for key, down in peft_state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        up = peft_state.get(f"{module}.lora_B.weight")
        if up is None:
            raise CheckpointError(f"{file}: layer {module} has lora_down but no lora_up", hint=HINT)
        if default_alpha is not None:
            module_alphas.setdefault(module, default_alpha)
        layers.append(LoraLayer(module, tuple(down.shape), tuple(up.shape), module_alphas.get(module)))
    if not layers:
        raise CheckpointError(f"{file}: holds no complete LoRA layer (lora_down with lora_up)", hint=HINT)
    return layers, module_alphas


def check_fits(unet, layers: list[LoraLayer], file: Path, origin: dict[str, str] | None = None) -> None:
    """Every LoRA layer names a Linear or Conv2d of ``unet`` and has shapes that multiply to its weight's shape;
    ``origin`` gives the LoRA's own name of a layer placed elsewhere (for the messages)."""
    import torch

    origin = origin or {}

    def named(layer: LoraLayer) -> str:
        own = origin.get(layer.module, layer.module)
        return layer.module if own == layer.module else f"{own} (placed on the --unet UNet's {layer.module})"

    def why(layer: LoraLayer) -> tuple[str, str]:
        if origin.get(layer.module, layer.module) == layer.module:
            return "a LoRA for another architecture?", HINT
        return (
            "the --unet UNet's layer has another shape than Stable Diffusion's in its place",
            "fuse this LoRA into Stable Diffusion's own UNet (export without --unet)",
        )

    modules = dict(unet.named_modules())
    unknown = [layer.module for layer in layers if layer.module not in modules]
    if unknown:
        raise CheckpointError(
            f"{file}: {len(unknown)} of its {len(layers)} layers match no layer of the UNet "
            f"(e.g. {unknown[0]}): a LoRA for another architecture?",
            hint=HINT,
        )
    for layer in layers:
        target = modules[layer.module]
        if isinstance(target, torch.nn.Linear):
            down, up = (layer.rank, target.in_features), (target.out_features, layer.rank)
        elif isinstance(target, torch.nn.Conv2d):
            down = (layer.rank, target.in_channels // target.groups, *target.kernel_size)
            up = (target.out_channels, layer.rank, 1, 1)
        else:
            raise CheckpointError(
                f"{file}: layer {named(layer)} is a {type(target).__name__} in the UNet, "
                "not a Linear or Conv2d a LoRA can adapt",
                hint=HINT,
            )
        if layer.down != down or layer.up != up:
            reason, hint = why(layer)
            raise CheckpointError(
                f"{file}: layer {named(layer)} does not fit the UNet: LoRA down {list(layer.down)}, "
                f"up {list(layer.up)}; its weight {list(target.weight.shape)} needs down {list(down)}, "
                f"up {list(up)}: {reason}",
                hint=hint,
            )


def meta_unet(config: dict):
    """A diffusers UNet of ``config`` on the meta device: its layers and shapes, no weights. diffusers' private keys
    are left out (its ``_use_default_values`` would override the values of the keys it names)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def place_lora(unet, source: str | Path, made_for: dict | None = None) -> Placement:
    """Where the LoRA at ``source`` goes in ``unet`` (``place_layers``), its file read as ``fuse_lora`` reads it;
    ``unet`` may be on the meta device (only names and shapes are read): the export's check before any work."""
    file = lora_weights_file(source)
    state, alphas, metadata = read_lora(file)
    layers, _ = lora_layers(state, alphas, file)
    return Placement(file, tuple(layers), place_layers(unet, layers, metadata, file, made_for))


def place_layers(unet, layers: list[LoraLayer], metadata: dict | None, file: Path, made_for: dict | None):
    """The UNet layer of ``unet`` each LoRA layer goes to (``Placement.targets``).

    By its own name when each of the LoRA's layers names a layer of ``unet``, or when ``made_for`` is None; else,
    ``unet`` being distilled from the UNet of config ``made_for`` (Stable Diffusion's, under ``export --unet``), the
    LoRA must fit that UNet, and each of its layers goes to the layer of ``unet`` distilled from it
    (``distilled_from``), those of blocks ``unet`` lacks nowhere. A layer that does not fit where it goes is a
    one-line CheckpointError.
    """
    from export.small_unet import distilled_from

    modules = dict(unet.named_modules())
    if made_for is None or all(layer.module in modules for layer in layers):
        check_fits(unet, layers, file)
        return {layer.module: layer.module for layer in layers}
    check_fits(meta_unet(made_for), layers, file)  # a LoRA for Stable Diffusion's UNet
    kept = {distilled_from(name, dict(unet.config), made_for): name for name in modules}  # SD layer -> small UNet's
    targets = {layer.module: kept[layer.module] for layer in layers if layer.module in kept}
    if not targets:
        raise CheckpointError(f"{file}: none of its {len(layers)} layers is in a block the --unet UNet kept", hint=HINT)
    if metadata is not None and any(module != target for module, target in targets.items()):
        raise CheckpointError(
            f"{file}: its peft metadata names Stable Diffusion's UNet layers, which the --unet UNet holds under other "
            "names; such a LoRA is not placed on it",
            hint="fuse it into Stable Diffusion's own UNet (export without --unet), or pass a LoRA without metadata",
        )
    placed = [replace(layer, module=targets[layer.module]) for layer in layers if layer.module in targets]
    check_fits(unet, placed, file, origin={target: module for module, target in targets.items()})
    return targets


def placed_state(state: dict, alphas: dict[str, float], targets: dict[str, str]) -> tuple[dict, dict]:
    """The LoRA's UNet tensors in peft's layout (``unet.<layer>.lora_A.weight``...) and its alphas
    (``unet.<layer>.alpha``), each under the UNet layer it goes to; those of layers going nowhere left out."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    peft_state = convert_unet_state_dict_to_peft(
        {key.removeprefix("unet."): value for key, value in state.items() if key.startswith("unet.")}
    )
    tensors = {}
    for key, value in peft_state.items():
        module, _, part = key.partition(".lora_")  # <layer>.lora_A.weight, <layer>.lora_B.weight
        if module in targets:
            tensors[f"unet.{targets[module]}.lora_{part}"] = value
    return tensors, {f"unet.{targets[module]}.alpha": alpha for module, alpha in alphas.items() if module in targets}


def fuse_lora(
    unet,
    source: str | Path,
    scale: float = 1.0,
    made_for: dict | None = None,
    *,
    weights_name: str = LORA_WEIGHTS_NAME,
    default_alpha: float | None = None,
) -> LoraInfo:
    """Fuse the LoRA at ``source`` (its ``weights_name`` in a folder or hub repo: ``lora_weights_file``) into the
    diffusers ``UNet2DConditionModel`` ``unet``, in place; ``made_for``: the config of the UNet ``unet`` was distilled
    from, when it is a small UNet (``place_layers`` says where each layer goes, and which are left out).

    ``W' = W + scale * alpha / rank * up @ down`` on every adapted layer (diffusers + peft compute it); alpha is the
    file's, else ``default_alpha`` where given and the file has no peft metadata, else the rank. Nothing is changed
    when the LoRA does not fit: errors are one-line ``CheckpointError``s naming the file.
    """
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not math.isfinite(scale):
        raise CheckpointError(f"{source}: LoRA scale {scale} is not a finite number", hint="pass e.g. 1.0")
    file = lora_weights_file(source, weights_name)
    state, alphas, metadata = read_lora(file)
    layers, module_alphas = lora_layers(state, alphas, file, default_alpha if metadata is None else None)
    placement = Placement(file, tuple(layers), place_layers(unet, layers, metadata, file, made_for))
    if placement.renamed:
        state, alphas = placed_state(state, module_alphas, placement.targets)
    else:
        alphas = {f"unet.{module}.alpha": alpha for module, alpha in module_alphas.items()}
    fused = [
        replace(layer, module=placement.targets[layer.module]) for layer in layers if layer.module in placement.targets
    ]
    try:
        StableDiffusionPipeline.load_lora_into_unet(
            state, alphas or None, unet=unet, adapter_name=ADAPTER, metadata=metadata
        )
        ranks, fused_alphas = set(), set()
        for layer in fused:  # what peft is about to merge: one adapter per LoRA layer, with the file's rank and alpha
            module = unet.get_submodule(layer.module)
            if not isinstance(module, BaseTunerLayer) or ADAPTER not in module.r:
                raise CheckpointError(
                    f"{file}: diffusers did not adapt its layer {layer.module}",
                    hint="report this with your diffusers and peft versions",
                )
            rank, alpha = module.r[ADAPTER], float(module.lora_alpha[ADAPTER])
            if rank != layer.rank or (layer.alpha is not None and alpha != layer.alpha):
                raise CheckpointError(
                    f"{file}: diffusers would fuse {layer.module} with rank {rank}, alpha {alpha} "
                    f"instead of the file's {layer.rank}, {layer.alpha}",
                    hint="report this with your diffusers and peft versions",
                )
            ranks.add(rank)
            fused_alphas.add(alpha)
    except (CheckpointError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        unet.unload_lora()  # nothing is merged yet: without the adapters the UNet is as it was
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{file}: diffusers could not load it into the UNet ({type(exc).__name__}: {first_line(exc)})",
            hint=HINT,
        ) from exc
    unet.fuse_lora(lora_scale=scale, adapter_names=[ADAPTER])
    unet.unload_lora()  # the weights keep the fused values; the peft wrappers go
    return LoraInfo(
        source=str(source),
        sha256=file_sha256(file),
        scale=float(scale),
        ranks=tuple(sorted(ranks)),
        alphas=tuple(sorted(fused_alphas)),
        layers=len(fused),
        skipped=placement.skipped,
    )
