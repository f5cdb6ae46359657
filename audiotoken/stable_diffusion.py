"""The one Stable Diffusion loader: a hub id or a local diffusers folder -> its frozen components (and the tiny
autoencoder TAESD, which stands in for its VAE in fast bundles, and a distilled UNet, such as BK-SDM's, which stands in
for its UNet).

Used by every part that needs Stable Diffusion: the reference pipeline (``audiotoken.pipeline``), training
(``audiotoken.training``) and export (``export.sources``, which also hashes the files). A hub id
(``CompVis/stable-diffusion-v1-4``) resolves to its snapshot folder (downloaded once, then from the hub cache);
a local folder must have the diffusers layout. Load failures become one-line ``CheckpointError``s naming the
folder and the component. The tokenizer always comes back with ``<*>`` added.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import CheckpointError, first_line

COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
# what a hub snapshot needs: configs, tokenizer, fp32 safetensors weights (not the .ckpt, fp16 or EMA variants)
HUB_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
TINY_AUTOENCODER_FILES = ("config.json", "diffusion_pytorch_model.safetensors")  # a diffusers AutoencoderTiny folder
UNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors")  # a diffusers UNet folder (fp32 safetensors)
UNET_EXAMPLE = "nota-ai/bk-sdm-tiny"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # owner/name


def quiet_libraries() -> None:
    """Silence transformers' and diffusers' info chatter and their weight-loading bars; our own bars stay."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def resolve_folder(ref: str | Path, what: str, required: tuple[str, ...], patterns: list[str], example: str) -> Path:
    """A local folder holding ``required`` as is, or a hub id's snapshot folder (downloaded or from the cache)."""
    path = Path(ref)
    if path.is_dir():
        missing = [name for name in required if not (path / name).exists()]
        if missing:
            raise CheckpointError(
                f"{ref}: not a {what} folder (no {', '.join(missing)})",
                hint=f"pass a diffusers {what} folder or a hub id such as {example}",
            )
        return path
    if path.exists() or not HUB_ID.match(str(ref)):
        raise CheckpointError(
            f"{ref}: not a diffusers folder, and not a hub id (owner/name)",
            hint=f"pass e.g. {example} or a local diffusers folder",
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(ref), allow_patterns=patterns))
    except Exception as exc:  # the hub client raises many types (offline, not found, gated, HTTP)
        raise CheckpointError(
            f"{ref}: cannot fetch it from the model hub ({type(exc).__name__}: {first_line(exc)})",
            hint="check the id and the network, or pass a local diffusers folder",
        ) from exc


def resolve(sd: str | Path) -> Path:
    """A Stable Diffusion: a local diffusers folder, or a hub id's snapshot."""
    return resolve_folder(sd, "Stable Diffusion", COMPONENTS, HUB_PATTERNS, "CompVis/stable-diffusion-v1-4")


def resolve_tiny_autoencoder(ref: str | Path) -> Path:
    """A tiny autoencoder (TAESD, diffusers ``AutoencoderTiny``): a local folder, or a hub id's snapshot."""
    return resolve_folder(
        ref, "AutoencoderTiny", TINY_AUTOENCODER_FILES[:1], list(TINY_AUTOENCODER_FILES), "madebyollin/taesd"
    )


def resolve_unet(ref: str | Path) -> Path:
    """The folder of a UNet given in place of Stable Diffusion's own (``export --unet``): a diffusers UNet folder
    (``config.json`` + ``diffusion_pytorch_model.safetensors``), a diffusers model folder holding one in ``unet/``, or
    a hub id's snapshot of either (``nota-ai/bk-sdm-tiny``: its ``unet/`` files only). Errors name ``--unet``."""
    hint = f"pass a diffusers UNet folder, a model folder holding unet/, or a hub id such as {UNET_EXAMPLE}"
    try:
        root = resolve_folder(ref, "UNet", (), [*UNET_FILES, *(f"unet/{name}" for name in UNET_FILES)], UNET_EXAMPLE)
    except CheckpointError as exc:  # neither a folder nor a hub id, or the hub could not give it
        raise CheckpointError(f"--unet {exc}", hint=exc.hint) from exc
    folder = root / "unet" if (root / "unet" / "config.json").is_file() else root
    missing = [name for name in UNET_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"--unet {ref}: no {', '.join(missing)} in {folder}", hint=hint)
    return folder


def unet_at(folder: Path, ref: str):
    """The diffusers ``UNet2DConditionModel`` in the UNet folder ``folder`` (fp32, eval mode); ``ref`` as given."""
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel.from_pretrained(folder).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"--unet {ref}: cannot load a UNet2DConditionModel from {folder} ({type(exc).__name__}: {first_line(exc)})",
            hint=f"pass a diffusers UNet folder or a hub id such as {UNET_EXAMPLE}",
        ) from exc


def tiny_autoencoder(folder: Path):
    """The diffusers ``AutoencoderTiny`` in ``folder`` (fp32, eval mode); a broken folder is a CheckpointError."""
    from diffusers import AutoencoderTiny

    try:
        return AutoencoderTiny.from_pretrained(folder).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{folder}: cannot load an AutoencoderTiny from it ({type(exc).__name__}: {first_line(exc)})",
            hint="pass a diffusers AutoencoderTiny folder such as madebyollin/taesd",
        ) from exc


def full_config(model_class, folder: Path, subfolder: str | None = None) -> dict:
    """A diffusers ``config.json`` completed with the class's defaults (old SD 1.4 files lack e.g. scaling_factor)."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(model_class.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **model_class.load_config(folder, subfolder=subfolder)}


@dataclass(frozen=True)
class StableDiffusion:
    """A resolved Stable Diffusion folder; each method loads one component (fp32, eval mode) when called."""

    folder: Path
    ref: str  # as the user gave it (hub id or path), for messages and manifests

    @classmethod
    def open(cls, sd: str | Path) -> StableDiffusion:
        return cls(resolve(sd), str(sd))

    def load(self, component: str, loader, **kwargs):
        """``loader(folder, subfolder=component)``; a missing or broken component is a CheckpointError naming it."""
        try:
            return loader(self.folder, subfolder=component, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{self.ref}: cannot load its {component} ({type(exc).__name__}: {first_line(exc)})",
                hint="pass a complete diffusers Stable Diffusion folder or hub id",
            ) from exc

    def tokenizer(self):
        """The CLIP tokenizer with ``<*>`` added (once)."""
        from transformers import CLIPTokenizer

        from audiotoken.text import add_placeholder

        tokenizer = self.load("tokenizer", CLIPTokenizer.from_pretrained)
        add_placeholder(tokenizer)
        return tokenizer

    def text_encoder(self, eager_attention: bool = False):
        """CLIP's text model; ``eager_attention`` gives the plain MatMul/Softmax graph export wants on every backend."""
        from transformers import CLIPTextModel

        kwargs = {"attn_implementation": "eager"} if eager_attention else {}
        return self.load("text_encoder", CLIPTextModel.from_pretrained, **kwargs).eval()

    def unet(self):
        from diffusers import UNet2DConditionModel

        return self.load("unet", UNet2DConditionModel.from_pretrained).eval()

    def vae(self):
        from diffusers import AutoencoderKL

        return self.load("vae", AutoencoderKL.from_pretrained).eval()

    def scheduler_config(self) -> dict:
        """The model's ``scheduler_config.json``, as written."""
        return json.loads((self.folder / "scheduler" / "scheduler_config.json").read_text())

    def scheduler(self):
        """The model's own diffusers scheduler (PNDM for SD 1.x), from its config."""
        import diffusers

        config = self.scheduler_config()
        return getattr(diffusers, config.get("_class_name", ""), diffusers.PNDMScheduler).from_config(config)

    def noise_scheduler(self):
        """The training-time forward process (DDPM) with the model's noise schedule and prediction type."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config())

    def prediction_type(self) -> str:
        """epsilon or v_prediction, with the scheduler class's default where the config omits it."""
        return self.scheduler().config.prediction_type

    def unet_config(self) -> dict:
        from diffusers import UNet2DConditionModel

        return full_config(UNet2DConditionModel, self.folder, "unet")

    def vae_config(self) -> dict:
        from diffusers import AutoencoderKL

        return full_config(AutoencoderKL, self.folder, "vae")

    def text_width(self) -> int:
        """D of the text encoder (``hidden_size``)."""
        from transformers import CLIPTextConfig

        return self.load("text_encoder", CLIPTextConfig.from_pretrained).hidden_size

    def pipeline(self):
        """diffusers' ``StableDiffusionPipeline`` over these components, without the safety checker."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae(),
            text_encoder=self.text_encoder(),
            tokenizer=self.tokenizer(),
            unet=self.unet(),
            scheduler=self.scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
