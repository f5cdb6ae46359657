"""The export's inputs: Stable Diffusion (hub id or diffusers folder), the BEATs ``.pt``, the embedder ``.bin``, and
for fast bundles a distillation LoRA fused into the UNet (LCM-LoRA, Hyper-SD, TCD, PCM: its preset names the file in
a hub repo or folder, ``runtime.sampling.PRESETS``), a tiny autoencoder (TAESD) in place of the SD VAE and a
distilled small UNet (BK-SDM) in place of the SD's.

Place in the data flow: ``resolve_sources`` finds the files (``audiotoken.stable_diffusion`` resolves a hub id to its
snapshot), checks that a small UNet takes the SD's conditioning (``export.small_unet``) and hashes each file ->
``Sources`` gives the hashes to the bundle key and manifest, the dimensions to ``export.networks``, and loads each
PyTorch network on demand, one at a time, so the export holds one network in memory at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from audiotoken.stable_diffusion import (
    COMPONENTS,
    UNET_FILES,
    StableDiffusion,
    full_config,
    resolve_tiny_autoencoder,
    resolve_unet,
    tiny_autoencoder,
    unet_at,
)
from runtime.bundle import LORA_SOURCE, UNET_SOURCE, Lora, Source, file_sha256
from runtime.errors import CheckpointError, first_line
from runtime.sampling import FAST, Preset


@dataclass(frozen=True)
class Sources:
    """Resolved and hashed export inputs, with loaders for the PyTorch networks."""

    sd: StableDiffusion
    beats: Path
    embedder: Path
    entries: tuple[Source, ...]  # sd, beats, embedder (and lora, tiny_vae, unet) with their files' sha256
    lora: Lora | None = None  # fused into the UNet
    lora_file: Path | None = None  # its weights file
    preset: Preset | None = None  # the distillation preset it draws with (with a LoRA)
    tiny_vae: Path | None = None  # an AutoencoderTiny folder, the decoder and encoder in place of the SD VAE
    small_unet: Path | None = None  # a diffusers UNet folder, the UNet in place of the SD's (distilled from it)

    @property
    def small_unet_ref(self) -> str:
        """``--unet`` as given (hub id or path)."""
        return next(s.ref for s in self.entries if s.role == UNET_SOURCE)

    def unet(self):
        """The bundle's UNet (the small one when given, else Stable Diffusion's), with the LoRA fused into its weights
        when there is one (onto a small UNet where its distillation kept each layer: ``export.lora.place_layers``)."""
        unet = unet_at(self.small_unet, self.small_unet_ref) if self.small_unet else self.sd.unet()
        if self.lora is not None and self.lora_file is not None:
            from export.lora import fuse_lora

            alpha = self.preset.lora_alpha if self.preset is not None else None
            fuse_lora(unet, self.lora_file, self.lora.scale, made_for=self.lora_made_for(), default_alpha=alpha)
        return unet

    def unet_config(self) -> dict:
        """The bundle's UNet's config (the small one's when given), completed with diffusers' defaults."""
        return small_unet_config(self.small_unet, self.small_unet_ref) if self.small_unet else self.sd.unet_config()

    def lora_made_for(self) -> dict | None:
        """The config of the UNet a LoRA is made for when the bundle's UNet is not it: Stable Diffusion's own."""
        return self.sd.unet_config() if self.small_unet else None

    def place_lora(self):
        """Where the LoRA's layers go in the bundle's UNet, read off a weightless copy of it (``export.lora.Placement``;
        None without a LoRA): a LoRA that does not fit is refused before any export work."""
        if self.lora_file is None:
            return None
        from export.lora import meta_unet, place_lora

        return place_lora(meta_unet(self.unet_config()), self.lora_file, self.lora_made_for())

    def autoencoder(self):
        """The autoencoder whose decoder and encoder the bundle gets: the tiny one when given, else the SD VAE."""
        return tiny_autoencoder(self.tiny_vae) if self.tiny_vae else self.sd.vae()

    def autoencoder_config(self) -> dict:
        """The chosen autoencoder's config: its ``scaling_factor`` is the bundle's latent scaling."""
        if self.tiny_vae is None:
            return self.sd.vae_config()
        return json.loads((self.tiny_vae / "config.json").read_text())

    @property
    def decoder(self) -> str:
        return "taesd" if self.tiny_vae else "sd-vae"

    def audio_encoder(self):
        from audiotoken.encoder import AudioEncoder

        return AudioEncoder.from_checkpoints(self.beats, self.embedder)

    def embedder_width(self) -> int:
        """D of the embedder's tokens (``fc2.weight`` rows)."""
        from audiotoken.embedder import Embedder

        return Embedder.from_file(self.embedder).token_dim


def small_unet_config(folder: Path, ref: str) -> dict:
    """The config of the UNet folder ``folder`` (``--unet ref``), completed with diffusers' defaults."""
    from diffusers import UNet2DConditionModel

    try:
        return full_config(UNet2DConditionModel, folder)
    except (OSError, ValueError) as exc:  # unreadable, or not JSON
        raise CheckpointError(
            f"--unet {ref}: cannot read {folder / 'config.json'} ({first_line(exc)})",
            hint="pass a diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors)",
        ) from exc


def hash_folder(folder: Path) -> dict[str, str]:
    """sha256 of model_index.json and every file of the components, by path relative to ``folder``."""
    files = [folder / "model_index.json"] + [
        f for c in COMPONENTS for f in sorted((folder / c).rglob("*")) if f.is_file()
    ]
    return {f.relative_to(folder).as_posix(): file_sha256(f) for f in files if f.is_file()}


def resolve_sources(
    sd: str,
    beats: str | Path,
    embedder: str | Path,
    lora: str | None = None,
    lora_scale: float = 1.0,
    tiny_vae: str | None = None,
    unet: str | None = None,
    preset: Preset | None = None,
) -> Sources:
    """Find and hash the inputs; errors name the one that is missing (or the small UNet that cannot stand in). A
    ``lora`` is fused at ``lora_scale`` and drawn with the distillation ``preset`` (the default one where None), whose
    file it is looked for in a hub repo or folder."""
    stable_diffusion = StableDiffusion.open(sd)
    small_unet = None
    if unet is not None:
        from export.small_unet import check_conditioning

        small_unet = resolve_unet(unet)
        config = small_unet_config(small_unet, unet)
        check_conditioning(unet, config, stable_diffusion.unet_config(), stable_diffusion.text_width())
    for path, what, hint in (
        (Path(beats), "BEATs checkpoint", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"),
        (Path(embedder), "embedder weights", "embedder_learned_embeds.bin"),
    ):
        if not path.is_file():
            raise CheckpointError(f"{path}: {what} not found", hint=f"pass the path of {hint}")
    entries = [
        Source("sd", sd, hash_folder(stable_diffusion.folder)),
        Source("beats", str(beats), {Path(beats).name: file_sha256(beats)}),
        Source("embedder", str(embedder), {Path(embedder).name: file_sha256(embedder)}),
    ]
    fused, weights = None, None
    if lora is not None:
        from export.lora import lora_weights_file

        preset = preset or FAST
        weights = lora_weights_file(lora, preset.lora_file)
        fused = Lora(str(lora), file_sha256(weights), float(lora_scale))
        entries.append(Source(LORA_SOURCE, str(lora), {weights.name: fused.sha256}))
    else:
        preset = None
    tiny_folder = None
    if tiny_vae is not None:
        tiny_folder = resolve_tiny_autoencoder(tiny_vae)
        files = sorted(p for p in tiny_folder.iterdir() if p.is_file())
        entries.append(Source("tiny_vae", str(tiny_vae), {p.name: file_sha256(p) for p in files}))
    if small_unet is not None:
        entries.append(Source(UNET_SOURCE, str(unet), {name: file_sha256(small_unet / name) for name in UNET_FILES}))
    return Sources(
        stable_diffusion,
        Path(beats),
        Path(embedder),
        tuple(entries),
        lora=fused,
        lora_file=weights,
        preset=preset,
        tiny_vae=tiny_folder,
        small_unet=small_unet,
    )
