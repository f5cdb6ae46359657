"""Seeded noise: every picture and every use of noise draws from its own stream, the same on every backend.

Data flow: a picture's ``seed`` -> ``NoiseStream(seed, INITIAL_NOISE)`` -> N(0, 1) latents [1, 4, h, w] -> scaled by
the scheduler's ``init_noise_sigma`` -> denoise, where a stochastic step (Euler ancestral) draws its fresh noise
from ``NoiseStream(seed, STEP_NOISE)``. Picture k of a run with ``--seed S`` has seed S + k, so its streams are
keyed (S + k, use) and never overlap another picture's or another use's.

The generator is counter-based, so a stream is a pure function of (seed, use), portable bit for bit:
- Philox4x64-10 (Salmon et al., SC 2011), as numpy's ``Philox`` bit generator implements it, with the 128-bit
  key (seed, use) and the counter starting at 0; its raw output is a sequence of uint64 values;
- each raw value u becomes a uniform in (0, 1]: ``1 - (u >> 11) * 2**-53``;
- consecutive pairs (u1, u2) become two normals by Box-Muller, in float64:
  ``r = sqrt(-2 ln u1)``, ``r cos(2 pi u2)``, ``r sin(2 pi u2)``, in that order; a draw of n values consumes
  ceil(n / 2) pairs and drops the unused last normal of an odd n; the values are rounded to float32.
numpy's own ``standard_normal`` (a ziggurat) is not used because it would be hard to reproduce outside numpy;
the recipe above is a few lines in any language, so a C++ host draws the same pictures from the same seed.
"""

from __future__ import annotations

import numpy as np

from runtime.errors import ConfigError

INITIAL_NOISE = 0  # the initial latents of a picture
STEP_NOISE = 1  # fresh noise added by stochastic scheduler steps (Euler ancestral)
MAX_SEED = 2**63 - 1  # seeds are non-negative and fit a signed 64-bit integer (C, C++, JSON)
RANDOM_SEED = -1  # what a user passes for "a fresh random seed", as in other Stable Diffusion tools


def check_seed(seed: int) -> int:
    """A seed as given, or a ConfigError naming the value and the accepted range."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed!r}: expected an integer from 0 to {MAX_SEED}, or {RANDOM_SEED} for a random one")
    return int(seed)


def draw_seed() -> int:
    """A fresh random seed (for runs that did not ask for one; it is recorded so they can be replayed)."""
    return int(np.random.default_rng().integers(0, 2**31 - 1))


class NoiseStream:
    """The N(0, 1) stream of one (seed, use); successive draws continue it."""

    def __init__(self, seed: int, use: int):
        self.bits = np.random.Philox(key=np.array([check_seed(seed), use], dtype=np.uint64))

    def standard_normal(self, shape: tuple[int, ...]) -> np.ndarray:
        """The next prod(shape) normals of the stream, as float32 of ``shape``."""
        count = int(np.prod(shape))
        raw = self.bits.random_raw(2 * ((count + 1) // 2)).reshape(-1, 2)  # [pairs, 2] uint64
        uniform = 1.0 - (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [pairs, 2] in (0, 1]
        radius = np.sqrt(-2.0 * np.log(uniform[:, 0]))  # [pairs]
        angle = 2.0 * np.pi * uniform[:, 1]  # [pairs]
        normals = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).reshape(-1)  # [2 * pairs]
        return normals[:count].reshape(shape).astype(np.float32)


def initial_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """The initial latents of the picture with ``seed``: N(0, 1) noise of ``shape`` (e.g. [1, 4, h, w]), float32."""
    return NoiseStream(seed, INITIAL_NOISE).standard_normal(shape)
