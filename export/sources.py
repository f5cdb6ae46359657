"""The export's inputs: Stable Diffusion (hub id or diffusers folder), the BEATs ``.pt``, the embedder ``.bin``, and
for fast bundles a LoRA fused into the UNet (LCM-LoRA) and a tiny autoencoder (TAESD) in place of the SD VAE.

Place in the data flow: ``resolve_sources`` finds the files (``audiotoken.stable_diffusion`` resolves a hub id to its
snapshot) and hashes each one -> ``Sources`` gives the hashes to the bundle key and manifest, the dimensions to
``export.networks``, and loads each PyTorch network on demand, one at a time, so the export holds one network in
memory at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from audiotoken.stable_diffusion import COMPONENTS, StableDiffusion, resolve_tiny_autoencoder, tiny_autoencoder
from runtime.bundle import Lora, Source, file_sha256
from runtime.errors import CheckpointError


@dataclass(frozen=True)
class Sources:
    """Resolved and hashed export inputs, with loaders for the PyTorch networks."""

    sd: StableDiffusion
    beats: Path
    embedder: Path
    entries: tuple[Source, ...]  # sd, beats, embedder (and lcm_lora, tiny_vae) with their files' sha256
    lora: Lora | None = None  # fused into the UNet
    tiny_vae: Path | None = None  # an AutoencoderTiny folder, the decoder and encoder in place of the SD VAE

    def unet(self):
        """Stable Diffusion's UNet, with the LoRA fused into its weights when there is one."""
        unet = self.sd.unet()
        if self.lora is not None:
            from export.lora import fuse_lora

            fuse_lora(unet, self.lora.source, self.lora.scale)
        return unet

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
    lcm_lora: str | None = None,
    lora_scale: float = 1.0,
    tiny_vae: str | None = None,
) -> Sources:
    """Find and hash the inputs; errors name the one that is missing."""
    stable_diffusion = StableDiffusion.open(sd)
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
    lora = None
    if lcm_lora is not None:
        from export.lora import lora_weights_file

        weights = lora_weights_file(lcm_lora)
        lora = Lora(str(lcm_lora), file_sha256(weights), float(lora_scale))
        entries.append(Source("lcm_lora", str(lcm_lora), {weights.name: lora.sha256}))
    tiny_folder = None
    if tiny_vae is not None:
        tiny_folder = resolve_tiny_autoencoder(tiny_vae)
        files = sorted(p for p in tiny_folder.iterdir() if p.is_file())
        entries.append(Source("tiny_vae", str(tiny_vae), {p.name: file_sha256(p) for p in files}))
    return Sources(stable_diffusion, Path(beats), Path(embedder), tuple(entries), lora, tiny_folder)
