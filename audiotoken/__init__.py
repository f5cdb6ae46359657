"""audiotoken: the PyTorch side of audiotoken-rt, faithful to the official AudioToken checkpoints.

Data flow: waveform -> ``compute_fbank`` -> ``BEATs`` (layers 4, 8, 12) -> ``Embedder`` -> audio token
(``AudioEncoder`` chains the three) -> ``TextConditioner`` splices it into the prompt -> Stable Diffusion
(``AudioTokenPipeline``, the diffusers reference; ``stable_diffusion`` is the one loader of its components).
``training`` trains the embedder, ``random_models`` writes test models in the official formats, and ``cli``
holds the ``train`` and ``make-random`` commands.

The names below are imported on first use, so ``import audiotoken.cli`` (the command's help) needs no torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AudioEncoder": "audiotoken.encoder",
    "AudioTokenPipeline": "audiotoken.pipeline",
    "BEATs": "audiotoken.beats",
    "BEATsConfig": "audiotoken.beats",
    "Embedder": "audiotoken.embedder",
    "TextConditioner": "audiotoken.text",
    "compute_fbank": "audiotoken.fbank",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'audiotoken' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
