"""The audio side of AudioToken as one module: 16 kHz waveform [B, 160000] -> token [B, D].

Data flow: ``runtime.audio.load_audio`` -> waveform -> ``Fbank`` (Kaldi features, fp32) -> ``BEATs`` (layers
4, 8, 12 concatenated) -> ``Embedder`` -> the token spliced into the prompt by ``audiotoken.text``.
This is also exactly the graph of the exported ``audio_encoder`` engine (docs/architecture.md), fbank included.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from audiotoken.beats import BEATs
from audiotoken.embedder import Embedder
from audiotoken.fbank import Fbank
from runtime.errors import CheckpointError


class AudioEncoder(nn.Module):
    """Frozen BEATs plus the trained embedder, with the fbank front end inside."""

    def __init__(self, beats: BEATs, embedder: Embedder):
        super().__init__()
        if embedder.fc1.in_features != beats.feature_dim:
            raise CheckpointError(
                f"embedder expects {embedder.fc1.in_features}-wide features but this BEATs gives {beats.feature_dim}"
                f" (3 layers x {beats.config.encoder_embed_dim})",
                hint="use the BEATs checkpoint the embedder was trained with",
            )
        self.fbank = Fbank()
        self.beats = beats
        self.embedder = embedder

    @property
    def token_dim(self) -> int:
        """D: 768 for SD 1.x embedders, 1024 for SD 2.x (read from ``fc2``)."""
        return self.embedder.token_dim

    @classmethod
    def from_checkpoints(cls, beats: str | Path, embedder: str | Path, stochastic: bool = False) -> AudioEncoder:
        """Load the official BEATs ``.pt`` and ``embedder_learned_embeds.bin``; ``stochastic`` = official dropout
        (docs/method.md#quirks, Q1)."""
        return cls(BEATs.from_checkpoint(beats), Embedder.from_file(embedder, stochastic=stochastic)).eval()

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform [B, S] float32 in [-1, 1) at 16 kHz -> BEATs features [B, N, 3C] (N = 496 for 10 s)."""
        return self.beats(self.fbank(waveform))  # [B, N, 3C]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform [B, S] -> audio token [B, D]."""
        return self.embedder(self.features(waveform))  # [B, D]
