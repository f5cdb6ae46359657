"""Seeded initial latent noise, the same array for every backend, so their pictures compare pixel to pixel.

Data flow: ``seed`` -> N(0, 1) latents [B, 4, h, w] -> scaled by the scheduler's ``init_noise_sigma`` -> denoise.
numpy's PCG64 stream is fixed across platforms and numpy versions, unlike framework RNGs, so a seed recorded
in a PNG reproduces its picture on a Jetson, a desktop GPU, a CPU or the PyTorch reference.
"""

from __future__ import annotations

import numpy as np


def draw_seed() -> int:
    """A fresh random seed (for runs that did not ask for one; it is recorded so they can be replayed)."""
    return int(np.random.default_rng().integers(0, 2**31 - 1))


def initial_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise of ``shape`` (e.g. [B, 4, h, w]) from PCG64(seed), as float32."""
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(shape).astype(np.float32)
