"""Opt-in checks on the real official checkpoints (``-m golden`` with AUDIOTOKEN_GOLDEN_DIR holding
``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt`` and ``embedder_learned_embeds.bin``).

No reference outputs of the official code are available to this project, so these tests check what
docs/method.md#the-checkpoint and docs/method.md#the-embedder state of the real files (cfg values, key layout,
counts, D) and that a real clip goes through to a finite token.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.golden

GOLDEN = Path(os.environ.get("AUDIOTOKEN_GOLDEN_DIR", "/nonexistent"))
BEATS = GOLDEN / "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
EMBEDDER = GOLDEN / "embedder_learned_embeds.bin"


@pytest.fixture(scope="module")
def encoder():
    if not (BEATS.is_file() and EMBEDDER.is_file()):
        pytest.skip(f"set AUDIOTOKEN_GOLDEN_DIR to a folder with {BEATS.name} and {EMBEDDER.name}")
    from audiotoken.encoder import AudioEncoder

    return AudioEncoder.from_checkpoints(BEATS, EMBEDDER)


def test_the_real_beats_cfg_is_iter3(encoder):
    cfg = encoder.beats.config
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_attention_heads, cfg.embed_dim) == (12, 768, 12, 512)
    assert cfg.deep_norm and cfg.gru_rel_pos and cfg.relative_position_embedding and not cfg.layer_norm_first
    assert (cfg.num_buckets, cfg.max_distance, cfg.conv_pos, cfg.conv_pos_groups) == (320, 800, 128, 16)
    assert sum(p.numel() for p in encoder.beats.parameters()) == 90_311_792 - 128  # weight norm folded


def test_the_released_embedder_is_for_sd1(encoder):
    assert encoder.token_dim == 768
    assert sum(p.numel() for p in encoder.embedder.parameters()) == 8_853_507


def test_a_real_clip_gives_a_finite_token(encoder, clips):
    from runtime.audio import load_audio

    waveform = torch.from_numpy(load_audio(clips[0]))[None]  # [1, 160000]
    with torch.no_grad():
        features = encoder.features(waveform)
        token = encoder.embedder(features)
    assert features.shape == (1, 496, 2304) and token.shape == (1, 768)
    assert torch.isfinite(token).all() and token.norm() > 0
