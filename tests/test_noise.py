"""runtime.noise: the portable noise streams follow their written recipe, are N(0, 1), and never share draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.noise import INITIAL_NOISE, STEP_NOISE, NoiseStream, check_seed, initial_noise
from tests.support import REPO

PHILOX_KAT = REPO / "tests" / "data" / "philox4x64_10_kat.txt"  # Random123's known answers for Philox4x64-10


def by_the_recipe(seed: int, use: int, count: int) -> list[float]:
    """The module docstring's recipe, one value at a time with Python's math: Philox4x64-10 raw words keyed
    (seed, use) -> uniforms in (0, 1] -> Box-Muller pairs (cos first), rounded to float32."""
    raw = np.random.Philox(key=np.array([seed, use], dtype=np.uint64)).random_raw(2 * math.ceil(count / 2))
    values = []
    for u1, u2 in zip(raw[0::2], raw[1::2], strict=True):
        a, b = 1.0 - (int(u1) >> 11) * 2.0**-53, 1.0 - (int(u2) >> 11) * 2.0**-53
        radius = math.sqrt(-2.0 * math.log(a))
        values += [radius * math.cos(2.0 * math.pi * b), radius * math.sin(2.0 * math.pi * b)]
    return [float(np.float32(v)) for v in values[:count]]


@pytest.mark.parametrize(
    "seed, use, count", [(0, INITIAL_NOISE, 7), (123456789, STEP_NOISE, 10), (2**63 - 1, INITIAL_NOISE, 3)]
)
def test_the_stream_is_the_written_recipe(seed, use, count):
    assert NoiseStream(seed, use).standard_normal((count,)).tolist() == by_the_recipe(seed, use, count)


def philox_kat_cases() -> list[tuple[list[int], list[int], list[int]]]:
    """(counter [4], key [2], output [4]) of each line of Random123's vectors."""
    cases = []
    for line in PHILOX_KAT.read_text().splitlines():
        if line and not line.startswith("#"):
            name, rounds, *words = line.split()
            assert (name, rounds, len(words)) == ("philox4x64", "10", 10), line
            numbers = [int(word, 16) for word in words]
            cases.append((numbers[:4], numbers[4:6], numbers[6:]))
    return cases


@pytest.mark.parametrize("counter, key, output", philox_kat_cases(), ids=["zeros", "ones", "pi"])
def test_the_generator_is_philox4x64_10_by_random123s_known_answers(counter, key, output):
    """The stream's raw words are blocks of Philox4x64-10 keyed (seed, use) at counter 1, 2, ...: set the counter
    one below the vector's (numpy raises it before each block) and the key to the vector's, and the next block
    must be Random123's answer."""
    bits = NoiseStream(0, INITIAL_NOISE).bits
    state = bits.state
    below = (sum(word << (64 * i) for i, word in enumerate(counter)) - 1) % 2**256  # counter words, word 0 lowest
    state["state"]["counter"] = np.array([(below >> (64 * i)) & (2**64 - 1) for i in range(4)], dtype=np.uint64)
    state["state"]["key"] = np.array(key, dtype=np.uint64)
    state["buffer_pos"] = 4  # no block buffered: the next word starts a new block
    bits.state = state
    assert [int(word) for word in bits.random_raw(4)] == output


def test_the_first_values_are_pinned_for_other_languages():
    # what a C or C++ host must reproduce bit for bit (float32) from seed 0
    expected = [0.00808869581669569, -0.1521921306848526, -0.4468097388744354, 0.1914038062095642]
    assert initial_noise(0, (1, 4)).ravel().tolist() == expected


def test_successive_draws_continue_the_stream():
    stream = NoiseStream(5, STEP_NOISE)
    parts = [stream.standard_normal((2, 3)), stream.standard_normal((4,))]  # 6 then 4: even counts consume exactly
    assert np.array_equal(np.concatenate([p.ravel() for p in parts]), NoiseStream(5, STEP_NOISE).standard_normal((10,)))


def test_draws_are_standard_normal():
    n = 400_000
    x = NoiseStream(11, INITIAL_NOISE).standard_normal((n,)).astype(np.float64)
    assert abs(x.mean()) < 5 / math.sqrt(n)  # 5 sigma of the mean
    assert abs(x.var() - 1) < 5 * math.sqrt(2 / n)  # 5 sigma of the variance
    for q, z in ((0.5, 0.0), (0.8413447, 1.0), (0.9772499, 2.0)):  # the normal's quantiles
        assert abs(np.mean(x < z) - q) < 5 * math.sqrt(q * (1 - q) / n), z


def test_pictures_and_uses_never_share_noise():
    """The bug this replaces: picture S's ancestral noise was picture S+1's initial noise."""
    n = 50_000
    streams = {
        (seed, use): NoiseStream(seed, use).standard_normal((n,)).astype(np.float64)
        for seed in (20, 21)
        for use in (INITIAL_NOISE, STEP_NOISE)
    }
    keys = list(streams)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert abs(np.corrcoef(streams[a], streams[b])[0, 1]) < 5 / math.sqrt(n), (a, b)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True, "7"])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(ConfigError, match="expected an integer from 0 to"):
        check_seed(seed)
