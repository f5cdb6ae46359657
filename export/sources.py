"""The export's inputs: Stable Diffusion (hub id or diffusers folder), the BEATs ``.pt`` and the embedder ``.bin``.

Place in the data flow: ``resolve_sources`` finds the files (``audiotoken.stable_diffusion`` resolves a hub id to its
snapshot) and hashes each one -> ``Sources`` gives the hashes to the bundle key and manifest, the dimensions to
``export.networks``, and loads each PyTorch network on demand, one at a time, so the export holds one network in
memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audiotoken.stable_diffusion import COMPONENTS, StableDiffusion
from runtime.bundle import Source, file_sha256
from runtime.errors import CheckpointError


@dataclass(frozen=True)
class Sources:
    """Resolved and hashed export inputs, with loaders for the PyTorch networks."""

    sd: StableDiffusion
    beats: Path
    embedder: Path
    entries: tuple[Source, ...]  # sd, beats, embedder with their files' sha256

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


def resolve_sources(sd: str, beats: str | Path, embedder: str | Path) -> Sources:
    """Find and hash the three inputs; errors name the one that is missing."""
    stable_diffusion = StableDiffusion.open(sd)
    for path, what, hint in (
        (Path(beats), "BEATs checkpoint", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"),
        (Path(embedder), "embedder weights", "embedder_learned_embeds.bin"),
    ):
        if not path.is_file():
            raise CheckpointError(f"{path}: {what} not found", hint=f"pass the path of {hint}")
    entries = (
        Source("sd", sd, hash_folder(stable_diffusion.folder)),
        Source("beats", str(beats), {Path(beats).name: file_sha256(beats)}),
        Source("embedder", str(embedder), {Path(embedder).name: file_sha256(embedder)}),
    )
    return Sources(stable_diffusion, Path(beats), Path(embedder), entries)
