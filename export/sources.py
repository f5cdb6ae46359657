"""The export's inputs: Stable Diffusion (hub id or diffusers folder), the BEATs ``.pt`` and the embedder ``.bin``.

Place in the data flow: ``resolve_sources`` finds the files (a hub id is resolved to its snapshot) and hashes each
one -> ``Sources`` gives the hashes to the bundle key and manifest, the dimensions to ``export.networks``, and
loads each PyTorch network on demand, one at a time, so the export holds one network in memory at a time.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.bundle import Source, file_sha256
from runtime.errors import CheckpointError

SD_COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
# what a hub snapshot needs: configs, tokenizer, fp32 safetensors weights (not the .ckpt, fp16 or EMA variants)
HUB_PATTERNS = [
    "model_index.json", "scheduler/scheduler_config.json", "tokenizer/*",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # owner/name


def full_config(model_class, folder: Path, subfolder: str) -> dict:
    """A diffusers ``config.json`` completed with the class's defaults (old SD 1.4 files lack e.g. scaling_factor)."""
    defaults = {name: p.default for name, p in inspect.signature(model_class.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **model_class.load_config(folder, subfolder=subfolder)}


@dataclass(frozen=True)
class Sources:
    """Resolved and hashed export inputs, with loaders for the PyTorch networks."""

    sd_dir: Path
    beats: Path
    embedder: Path
    entries: tuple[Source, ...]  # sd, beats, embedder with their files' sha256

    def tokenizer(self):
        """The SD CLIP tokenizer with ``<*>`` added."""
        from transformers import CLIPTokenizer

        from audiotoken.text import add_placeholder

        tokenizer = CLIPTokenizer.from_pretrained(self.sd_dir / "tokenizer")
        add_placeholder(tokenizer)
        return tokenizer

    def text_encoder(self):
        # eager attention: the plain MatMul/Softmax graph, the same on every exporter and backend
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(self.sd_dir, subfolder="text_encoder", attn_implementation="eager").eval()

    def unet(self):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(self.sd_dir, subfolder="unet").eval()

    def vae(self):
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(self.sd_dir, subfolder="vae").eval()

    def audio_encoder(self):
        from audiotoken.encoder import AudioEncoder

        return AudioEncoder.from_checkpoints(self.beats, self.embedder)

    def unet_config(self) -> dict:
        from diffusers import UNet2DConditionModel

        return full_config(UNet2DConditionModel, self.sd_dir, "unet")

    def vae_config(self) -> dict:
        from diffusers import AutoencoderKL

        return full_config(AutoencoderKL, self.sd_dir, "vae")

    def text_width(self) -> int:
        """D of the text encoder (``hidden_size``)."""
        from transformers import CLIPTextConfig

        return CLIPTextConfig.from_pretrained(self.sd_dir, subfolder="text_encoder").hidden_size

    def embedder_width(self) -> int:
        """D of the embedder's tokens (``fc2.weight`` rows)."""
        from audiotoken.embedder import Embedder

        return Embedder.from_file(self.embedder).token_dim

    def scheduler_config(self) -> dict:
        """The model's ``scheduler_config.json``, as written."""
        return json.loads((self.sd_dir / "scheduler" / "scheduler_config.json").read_text())

    def prediction_type(self) -> str:
        """epsilon or v_prediction, with the scheduler class's default where the config omits it."""
        import diffusers

        config = self.scheduler_config()
        scheduler_class = getattr(diffusers, config.get("_class_name", ""), diffusers.PNDMScheduler)
        return scheduler_class.from_config(config).config.prediction_type


def resolve_sd(sd: str) -> Path:
    """A local diffusers folder as is, or a hub id's snapshot folder (downloaded or from the cache)."""
    path = Path(sd)
    if path.is_dir():
        missing = [c for c in SD_COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise CheckpointError(f"{sd}: not a Stable Diffusion folder (no {', '.join(missing)}/)",
                                  hint="pass a diffusers folder (model_index.json, unet/, vae/, ...) or a hub id")
        return path
    if path.exists() or not HUB_ID.match(sd):
        raise CheckpointError(f"{sd}: not a diffusers folder, and not a hub id (owner/name)",
                              hint="pass e.g. CompVis/stable-diffusion-v1-4 or a local diffusers folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(sd, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # the hub client raises many types (offline, not found, gated, HTTP)
        raise CheckpointError(f"{sd}: cannot fetch it from the model hub ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                              hint="check the id and the network, or pass a local diffusers folder") from exc


def hash_folder(folder: Path) -> dict[str, str]:
    """sha256 of model_index.json and every file of the components, by path relative to ``folder``."""
    files = [folder / "model_index.json"] + [f for c in SD_COMPONENTS for f in sorted((folder / c).rglob("*")) if f.is_file()]
    return {f.relative_to(folder).as_posix(): file_sha256(f) for f in files if f.is_file()}


def resolve_sources(sd: str, beats: str | Path, embedder: str | Path) -> Sources:
    """Find and hash the three inputs; errors name the one that is missing."""
    sd_dir = resolve_sd(sd)
    for path, what, hint in ((Path(beats), "BEATs checkpoint", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"),
                             (Path(embedder), "embedder weights", "embedder_learned_embeds.bin")):
        if not path.is_file():
            raise CheckpointError(f"{path}: {what} not found", hint=f"pass the path of {hint}")
    entries = (
        Source("sd", sd, hash_folder(sd_dir)),
        Source("beats", str(beats), {Path(beats).name: file_sha256(beats)}),
        Source("embedder", str(embedder), {Path(embedder).name: file_sha256(embedder)}),
    )
    return Sources(sd_dir, Path(beats), Path(embedder), entries)

