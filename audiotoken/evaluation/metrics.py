"""The paper's metrics on embeddings (docs/method.md#evaluation-metrics), with their 95% intervals; numpy only.

Place in the data flow: ``evaluation.scoring`` embeds pictures, clips and frames with the models -> these functions
turn the embeddings into AIS, IIS, AIC and FID and their intervals -> ``scoring.Scores``.

The official evaluation code was never released; the definitions are the closest public ones
(docs/method.md#evaluation-metrics, after the SonicDiffusion authors' script):
- AIS, IIS: win rates. For picture i of clip c, the share of the other evaluated clips r whose target (AIS: its
  Wav2CLIP audio; IIS: its ground-truth frame) is less similar to the picture than c's own:
  mean_r 1[cos(img_i, t_c) > cos(img_i, t_r)] (``win_rates``);
- AIC: zero-shot top-1 agreement of the picture with its clip's label over every class name (``class_agreement``);
- FID: the Frechet distance of Inception features, pictures against frames (``frechet_distance``).
And ``psnr``, which ``compare`` reports for each pair of pictures drawn from one clip and seed.

Written here, as no library does it: the win rates (the definitions above) and the intervals, which resample clips,
each with all its pictures (pictures of one clip are not independent):
- AIS, IIS, AIC: a percentile bootstrap of the mean (clips drawn with replacement: ``bootstrap_mean``);
- FID: not a bootstrap. Drawing with replacement repeats rows, and a Frechet distance grows as its distinct rows get
  fewer (its bias, of order features / rows), so bootstrap replicates lie above the FID they should surround (two
  samples of one distribution, 200x64: FID 11.3, bootstrap 95% [18.4, 22.6]). Each replicate is instead the FID of
  a random half of the K clips, m = ceil(K / 2) drawn without replacement (the delete-d jackknife of Shao and Wu,
  d = K - m: the spread of the m-clip FIDs about their mean, times sqrt(m / d), estimates the K-clip FID's); the
  interval is FID plus the 2.5th and 97.5th percentiles of those centred, rescaled replicates (floored at 0). It
  is the sampling spread of FID at this count of pictures, not an interval of the distance between the
  distributions (which FID overestimates at any count), and like a jackknife variance it errs wide (the test's
  case: 95% [10.4, 12.4], 1.4 times the spread of FID over fresh samples, [10.5, 11.9]) (``frechet_interval``).
And the Frechet distance, which pytorch-fid's ``calculate_frechet_distance`` does with scipy's ``sqrtm`` of a
2048x2048 product: seconds per call, and inexact when fewer than 2048 pictures make the covariances singular, so
replicates over it would take hours. The same quantity is exact from singular values: with covariance factors
A A^T = S1 and B B^T = S2, tr sqrt(S1 S2) = the sum of the singular values of A^T B (tests hold it to scipy's
``sqrtm`` within 1e-3, with more rows than features and with fewer).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.errors import ConfigError

Progress = Callable[[str, int, int], None]  # (stage, done, total)

WIN_RATE_CHUNK = 1024  # pictures per block of the [pictures, clips] similarity matrix


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float64): cosine similarities become dot products."""
    x = np.asarray(x, dtype=np.float64)  # [N, E]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # [N, E]


def win_rates(queries: np.ndarray, targets: np.ndarray, target_of: np.ndarray) -> np.ndarray:
    """Per query i: the share of the other targets r with cos(q_i, t_r) < cos(q_i, t_own), own = target_of[i].

    ``queries`` [N, E] (pictures), ``targets`` [K, E] (one per clip: its audio for AIS, its frame for IIS),
    ``target_of`` [N] (the query's own clip). Ties count as losses (the definition's strict ">"). -> [N] in [0, 1].
    """
    q, t = unit_rows(queries), unit_rows(targets)  # [N, E], [K, E]
    own = np.asarray(target_of, dtype=np.int64)  # [N]
    if len(t) < 2:
        raise ConfigError(f"a win rate needs 2 clips or more to compare with; got {len(t)}")
    rates = np.empty(len(q))
    for start in range(0, len(q), WIN_RATE_CHUNK):
        block = slice(start, start + WIN_RATE_CHUNK)
        similarity = q[block] @ t.T  # [b, K]
        true = similarity[np.arange(len(similarity)), own[block]]  # [b]
        rates[block] = (similarity < true[:, None]).sum(axis=1) / (len(t) - 1)  # own column never counts
    return rates


def class_agreement(images: np.ndarray, classes: np.ndarray, label_of: np.ndarray) -> np.ndarray:
    """Zero-shot top-1: 1 where the class text most similar to the picture is its clip's label, else 0.

    ``images`` [N, E], ``classes`` [C, E] (class-name text embeddings), ``label_of`` [N] class indices -> [N].
    """
    predicted = np.argmax(unit_rows(images) @ unit_rows(classes).T, axis=1)  # [N]
    return (predicted == np.asarray(label_of)).astype(np.float64)


def covariance_factor(x: np.ndarray) -> np.ndarray:
    """F [D, r] with F F^T = the sample covariance of the rows of ``x`` [N, D] (N - 1 in the denominator, as
    ``numpy.cov``): the centred rows themselves when N - 1 <= D, else the covariance's symmetric square root."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    centred = x - x.mean(axis=0)  # [N, D]
    if n - 1 <= x.shape[1]:
        return centred.T / np.sqrt(n - 1)  # [D, N]
    values, vectors = np.linalg.eigh(centred.T @ centred / (n - 1))  # [D], [D, D]
    return vectors * np.sqrt(np.clip(values, 0.0, None))  # [D, D]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID's distance between the Gaussians fitted to feature rows ``a`` [Na, D] and ``b`` [Nb, D]:
    |mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr sqrt(S_a S_b), the last term from singular values (module docstring)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"FID needs 2 feature rows or more on each side, of one width; got {a.shape} and {b.shape}")
    fa, fb = covariance_factor(a), covariance_factor(b)  # [D, ra], [D, rb]
    cross = np.linalg.svd(fa.T @ fb, compute_uv=False).sum()  # tr sqrt(S_a S_b)
    difference = a.mean(axis=0) - b.mean(axis=0)  # [D]
    return float(difference @ difference + (fa * fa).sum() + (fb * fb).sum() - 2.0 * cross)


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio of two 8-bit pictures of one size, in dB; inf when they are equal."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # [H, W, 3]
    if a.shape != b.shape:
        raise ConfigError(f"pictures of different sizes cannot be compared: {a.shape} and {b.shape}")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def clip_draws(groups: np.ndarray, replicates: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap's draws: the distinct clips [K] and, per replicate, how often each was drawn [B, K]."""
    clips = np.unique(groups)  # [K]
    return clips, rng.multinomial(len(clips), np.full(len(clips), 1 / len(clips)), size=replicates)  # [B, K]


def interval(values: np.ndarray) -> tuple[float, float]:
    """The central 95% of replicates (percentile interval)."""
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_mean(
    scores: np.ndarray, groups: np.ndarray, replicates: int, rng: np.random.Generator
) -> tuple[float, float] | None:
    """95% interval of the mean of per-picture ``scores`` [N], resampling clips (``groups`` [N]) with replacement;
    None with fewer than 2 clips or no replicates."""
    groups = np.asarray(groups)
    if replicates == 0 or len(np.unique(groups)) < 2:
        return None
    clips, counts = clip_draws(groups, replicates, rng)  # [K], [B, K]
    position = np.searchsorted(clips, groups)  # [N]
    sums = np.bincount(position, weights=scores, minlength=len(clips))  # [K]
    sizes = np.bincount(position, minlength=len(clips)).astype(np.float64)  # [K]
    return interval(counts @ sums / (counts @ sizes))  # [B] replicate means


def frechet_interval(
    a: np.ndarray,
    a_groups: np.ndarray,
    b: np.ndarray,
    b_groups: np.ndarray,
    replicates: int,
    rng: np.random.Generator,
    progress: Progress | None = None,
    value: float | None = None,
) -> tuple[float, float] | None:
    """95% interval of ``value`` = ``frechet_distance(a, b)`` (computed when not given) from half-samples of the
    clips, drawn without replacement, a drawn clip bringing all its rows of both sides (module docstring: the
    delete-d jackknife, not a bootstrap, whose repeated rows inflate FID). None with fewer than 3 clips (a half
    needs 2 clips), or no replicates."""
    clips = np.union1d(a_groups, b_groups)  # [K]
    kept = (len(clips) + 1) // 2  # m clips in a half-sample, d = K - m left out
    if replicates == 0 or kept < 2:
        return None
    value = frechet_distance(a, b) if value is None else value
    position_a, position_b = np.searchsorted(clips, a_groups), np.searchsorted(clips, b_groups)  # [Na], [Nb]
    values = []
    for r in range(replicates):
        drawn = np.zeros(len(clips), dtype=bool)
        drawn[rng.choice(len(clips), kept, replace=False)] = True
        pick_a, pick_b = drawn[position_a], drawn[position_b]  # [Na], [Nb]
        if pick_a.sum() >= 2 and pick_b.sum() >= 2:
            values.append(frechet_distance(a[pick_a], b[pick_b]))
        if progress:
            progress("FID interval", r + 1, replicates)
    if not values:
        return None
    values = np.asarray(values)
    low, high = interval((values - values.mean()) * np.sqrt(kept / (len(clips) - kept)))  # d = K - m
    return max(0.0, value + low), value + high
