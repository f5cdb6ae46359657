"""The paper's evaluation (SPEC section 7): AIS, IIS, AIC and FID of pictures drawn from sound clips.

Place in the data flow: ``audiotoken-rt generate`` (or ``compare``) writes pictures named after their clips ->
``gather`` pairs them with the clips, their ``labels.csv`` labels and ground-truth frames -> ``Evaluator`` turns
them into embeddings with the field's models (``audiotoken.eval_models``: open_clip, wav2clip, pytorch-fid) ->
the metrics below, each with its sample count and a 95% interval (clips resampled) -> ``Scores`` (table, JSON,
report).

The official evaluation code was never released; the definitions are the closest public ones (SPEC 7, after the
SonicDiffusion authors' script), computed here on numpy embeddings:
- AIS: for picture i of clip c, the share of the other evaluated clips r whose Wav2CLIP audio is less similar to the
  picture (CLIP ViT-B/32) than c's own: mean_r 1[cos(img_i, a_c) > cos(img_i, a_r)] (a win rate, not a cosine);
  Wav2CLIP hears each clip at 44.1 kHz, 442,763 samples, as SPEC 7 (SonicDiffusion's script) feeds it, although it
  was trained on 10 s at 16 kHz: ``wav2clip_rate=16000`` (``--wav2clip-rate``) feeds it that, 160,000 samples;
- IIS: the same win rate in CLIP ViT-L/14 image space, the clip's ground-truth frame against the other clips' frames;
- AIC: zero-shot CLIP ViT-L/14 over every class name of labels.csv (bare label text): top-1 == the clip's label;
- FID: the Frechet distance of pytorch-fid's Inception pool features, pictures against frames.
AIS, IIS and AIC are reported in percent, as the paper's table. The reference set of a win rate is every other
evaluated clip (SonicDiffusion used a cached random set of dataset clips, which is not public). A video's frame is
drawn from the clip's name alone (``FRAME_SEED``): the options' seed is the intervals' only.

Written here, as no library does it: the win rates (the definitions above) and the intervals, which resample clips,
each with all its pictures (pictures of one clip are not independent), each metric with its own random stream
(seeded by the seed and the metric), so one metric's interval does not depend on which others were asked for:
- AIS, IIS, AIC: a percentile bootstrap of the mean (clips drawn with replacement);
- FID: not a bootstrap. Drawing with replacement repeats rows, and a Frechet distance grows as its distinct rows get
  fewer (its bias, of order features / rows), so bootstrap replicates lie above the FID they should surround (two
  samples of one distribution, 200x64: FID 11.3, bootstrap 95% [18.4, 22.6]). Each replicate is instead the FID of
  a random half of the K clips, m = ceil(K / 2) drawn without replacement (the delete-d jackknife of Shao and Wu,
  d = K - m: the spread of the m-clip FIDs about their mean, times sqrt(m / d), estimates the K-clip FID's); the
  interval is FID plus the 2.5th and 97.5th percentiles of those centred, rescaled replicates (floored at 0). It
  is the sampling spread of FID at this count of pictures, not an interval of the distance between the
  distributions (which FID overestimates at any count), and like a jackknife variance it errs wide (the test's
  case: 95% [10.4, 12.4], 1.4 times the spread of FID over fresh samples, [10.5, 11.9]).
And the Frechet distance, which pytorch-fid's ``calculate_frechet_distance`` does with scipy's ``sqrtm`` of a
2048x2048 product: seconds per call, and inexact when fewer than 2048 pictures make the covariances singular, so
replicates over it would take hours. The same quantity is exact from singular values: with covariance factors
A A^T = S1 and B B^T = S2, tr sqrt(S1 S2) = the sum of the singular values of A^T B (tests hold it to scipy's
``sqrtm`` within 1e-3, with more rows than features and with fewer).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.errors import ConfigError, first_line

Progress = Callable[[str, int, int], None]  # (stage, done, total)
PictureSource = Path | Image.Image

METRICS = ("AIS", "IIS", "AIC", "FID")
PERCENT = ("AIS", "IIS", "AIC")  # win rates and accuracy, reported x100 as in the paper
PAPER = {"AIS": 68.23, "IIS": 76.66, "AIC": 45.48, "FID": 56.65}  # AudioToken on VGGSound (SPEC 7)
NEEDS_FRAMES = ("IIS", "FID")
NEEDS_LABELS = ("AIC",)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
WIN_RATE_CHUNK = 1024  # pictures per block of the [pictures, clips] similarity matrix
FRAME_SEED = 0  # with the clip's name, which frame of a ground-truth video is read (independent of the options' seed)
WAV2CLIP_RATE = 44_100  # Hz: how SonicDiffusion's script feeds Wav2CLIP (librosa.load(sr=44100), SPEC 7): the default
WAV2CLIP_SAMPLES = {  # Hz -> Wav2CLIP's fixed input length at that rate, zero-padded (or cut) to it
    44_100: 442_763,  # SonicDiffusion's (SPEC 7): 10.04 s
    16_000: 160_000,  # Wav2CLIP's own training input: 10 s at 16 kHz (wav2clip's pre_training dataset)
}


@dataclass(frozen=True)
class EvaluationOptions:
    """How to evaluate; the ``help`` of each field is the ``audiotoken-rt evaluate`` option's help."""

    metrics: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Metrics to compute, comma-separated (AIS,IIS,AIC,FID); default: all the inputs allow."},
    )
    bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap replicates (clips resampled) of the AIS, IIS and AIC intervals."}
    )
    fid_bootstrap: int = field(
        default=100,
        metadata={"help": "Replicates of the FID interval, each the FID of a random half of the clips (README)."},
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the intervals' replicates (not of the pictures, nor of the frames)."}
    )
    device: str = field(default="cpu", metadata={"help": "Where the models run: cpu, or cuda."})
    batch_size: int = field(default=16, metadata={"help": "Pictures (or clips) per model call."})
    wav2clip_rate: int = field(
        default=WAV2CLIP_RATE,
        metadata={
            "help": "Rate Wav2CLIP hears the clips at (AIS): 44100, 442,763 samples, as SPEC 7 (SonicDiffusion); "
            "or 16000, 160,000 samples, the rate Wav2CLIP was trained at."
        },
    )

    def check(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; choose from {','.join(METRICS)}")
        if self.bootstrap < 0 or self.fid_bootstrap < 0:
            raise ConfigError(f"bootstrap replicates {self.bootstrap}, {self.fid_bootstrap}: expected 0 or more")
        if self.batch_size < 1:
            raise ConfigError(f"batch size {self.batch_size}: expected 1 or more")
        if self.wav2clip_rate not in WAV2CLIP_SAMPLES:
            raise ConfigError(
                f"Wav2CLIP rate {self.wav2clip_rate} Hz: expected {' or '.join(map(str, WAV2CLIP_SAMPLES))}"
            )


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"ais, FID"`` -> ("AIS", "FID"); None or empty -> () (every metric the inputs allow)."""
    return tuple(dict.fromkeys(m.strip().upper() for m in (text or "").split(",") if m.strip()))


# ---- the metrics, on embeddings -----------------------------------------------------------------------------------


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


# ---- what is evaluated ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """One picture to score: its name (a file name, or a caption) and source, and the clip it was drawn from."""

    name: str
    clip: int  # index into ClipSet.names
    source: PictureSource


@dataclass(frozen=True)
class ClipSet:
    """The clips the pictures were drawn from, with what each metric compares against.

    ``labels`` are indices into ``classes`` (every class name of labels.csv, sorted), or None without labels;
    ``frames`` are ground-truth images or videos (None where not given)."""

    names: tuple[str, ...]
    audio: tuple[Path, ...]
    labels: tuple[int, ...] | None = None
    classes: tuple[str, ...] = ()
    frames: tuple[Path, ...] | None = None

    def label(self, clip: int) -> str:
        return self.classes[self.labels[clip]] if self.labels is not None else ""


def audio_files(folder: Path) -> dict[str, Path]:
    """{name: clip} in ``folder``, or in ``folder/audio`` when it is a training dataset's root."""
    from audiotoken.dataset import AUDIO_SUFFIXES, files_by_name

    if not folder.is_dir():
        raise ConfigError(
            f"--clips {folder}: no such folder", hint="pass the folder of the clips the pictures came from"
        )
    found = files_by_name(folder / "audio", AUDIO_SUFFIXES) or files_by_name(folder, AUDIO_SUFFIXES)
    if not found:
        raise ConfigError(f"--clips {folder}: no clips (.wav, .flac, .ogg, .mp3) in it or in its audio/ folder")
    return found


def frame_files(folder: Path) -> dict[str, Path]:
    """{name: image or video} in ``folder`` and its ``images/`` and ``video/`` folders; an image wins over a video
    of the same name (as in training)."""
    from audiotoken.dataset import IMAGE_SUFFIXES, VIDEO_SUFFIXES, files_by_name

    if not folder.is_dir():
        raise ConfigError(f"--frames {folder}: no such folder", hint="pass the ground-truth images or videos' folder")
    return {
        **files_by_name(folder, VIDEO_SUFFIXES),
        **files_by_name(folder / "video", VIDEO_SUFFIXES),
        **files_by_name(folder, IMAGE_SUFFIXES),
        **files_by_name(folder / "images", IMAGE_SUFFIXES),
    }


def clip_of_picture(stem: str, clips: dict[str, Path]) -> str | None:
    """The clip a picture is named after: ``<clip>.png`` or ``<clip>-<k>.png`` (as ``generate`` names them)."""
    if stem in clips:
        return stem
    head, dash, k = stem.rpartition("-")
    return head if dash and k.isdigit() and head in clips else None


def shown(names: Sequence[str], count: int = 3) -> str:
    return ", ".join(names[:count]) + (f" and {len(names) - count} more" if len(names) > count else "")


def clip_set(names: Sequence[str], audio: dict[str, Path], labels_csv: Path | None, frames: Path | None) -> ClipSet:
    """The ClipSet of ``names`` (sorted): their clips, labels (every one must have a row) and frames (each needs one)."""
    from audiotoken.dataset import read_labels

    names = sorted(names)
    labels, classes = None, ()
    if labels_csv is not None:
        rows = read_labels(Path(labels_csv))
        classes = tuple(sorted({label for label, _ in rows.values()}))
        unlabelled = [name for name in names if name not in rows]
        if unlabelled:
            raise ConfigError(
                f"{len(unlabelled)} clip(s) have no row in {labels_csv}: {shown(unlabelled)}",
                hint="add them to labels.csv (name,label,split), or leave their pictures out",
            )
        labels = tuple(classes.index(rows[name][0]) for name in names)
    found_frames = None
    if frames is not None:
        available = frame_files(Path(frames))
        missing = [name for name in names if name not in available]
        if missing:
            raise ConfigError(
                f"{len(missing)} clip(s) have no frame in {frames}: {shown(missing)}",
                hint="give each clip <name>.png/.jpg or <name>.mp4 (also in images/ or video/), or drop --frames",
            )
        found_frames = tuple(available[name] for name in names)
    return ClipSet(tuple(names), tuple(audio[name] for name in names), labels, classes, found_frames)


def gather(
    pictures: Path, clips: Path, labels_csv: Path | None, frames: Path | None = None
) -> tuple[ClipSet, list[Picture]]:
    """Pair the pictures of ``pictures`` with their clips, labels and frames; refuse a picture that matches no clip."""
    pictures, clips = Path(pictures), Path(clips)
    if not pictures.is_dir():
        raise ConfigError(
            f"--pictures {pictures}: no such folder", hint="pass the folder `audiotoken-rt generate --out` wrote"
        )
    files = sorted(p for p in pictures.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)
    if not files:
        raise ConfigError(f"--pictures {pictures}: no pictures ({', '.join(PICTURE_SUFFIXES)}) in it")
    audio = audio_files(clips)
    owners = {path: clip_of_picture(path.stem, audio) for path in files}
    unmatched = [path.name for path, owner in owners.items() if owner is None]
    if unmatched:
        raise ConfigError(
            f"{len(unmatched)} picture(s) in {pictures} match no clip in {clips}: {shown(unmatched)}",
            hint="name each picture <clip>.png or <clip>-<k>.png (as `audiotoken-rt generate` does)",
        )
    clip_names = clip_set(sorted(set(owners.values())), audio, labels_csv, frames)
    index = {name: i for i, name in enumerate(clip_names.names)}
    ordered = sorted(owners.items(), key=lambda item: (index[item[1]], item[0].name))
    return clip_names, [Picture(path.name, index[owner], path) for path, owner in ordered]


def read_picture(source: PictureSource) -> Image.Image:
    """A picture as PIL RGB (a file is read and closed)."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    with Image.open(source) as file:
        return file.convert("RGB")


def read_frame(path: Path, name: str) -> Image.Image:
    """A clip's ground-truth frame: the image, or one frame of the video drawn uniformly over its 10 s (as training
    draws inside its audio window), seeded by ``FRAME_SEED`` and the clip's name alone, so every run (whatever its
    seed) reads the same frame."""
    from audiotoken.dataset import VIDEO_SUFFIXES, read_video_frame
    from runtime.contract import CLIP_SECONDS

    if path.suffix.lower() in VIDEO_SUFFIXES:
        rng = np.random.default_rng([FRAME_SEED, zlib.crc32(name.encode())])
        return read_video_frame(path, 0, CLIP_SECONDS, rng).convert("RGB")
    return read_picture(path)


# ---- scores ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricResult:
    """One metric: its value (percent for AIS, IIS, AIC), pictures counted, 95% interval, and a note."""

    name: str
    value: float | None
    n: int
    ci95: tuple[float, float] | None = None
    note: str = ""


@dataclass
class Scores:
    """Every metric of one picture set, what was counted, and what was skipped (file, reason)."""

    metrics: dict[str, MetricResult]
    clips: int
    pictures: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    options: EvaluationOptions = EvaluationOptions()

    def as_json(self) -> dict:
        """``{"AIS": .., "IIS": .., "AIC": .., "FID": .., "n": {..}, "ci95": {..}, ...}`` (null where not computed)."""
        o, none = self.options, MetricResult("", None, 0)
        results = {name: self.metrics.get(name, none) for name in METRICS}
        return {
            **{name: result.value for name, result in results.items()},
            "n": {name: result.n for name, result in results.items()},
            "ci95": {name: list(result.ci95) if result.ci95 else None for name, result in results.items()},
            "notes": {name: result.note for name, result in self.metrics.items() if result.note},
            "clips": self.clips,
            "pictures": self.pictures,
            "skipped": [{"file": file, "reason": reason} for file, reason in self.skipped],
            "units": "AIS, IIS and AIC in percent (as the paper's table); FID in Inception feature units",
            "paper": PAPER,
            "protocol": {
                **PROTOCOL,
                "bootstrap": intervals_note(o),
                "wav2clip_rate": o.wav2clip_rate,
            },
        }


PROTOCOL = {
    "AIS": "win rate of the picture's own clip over every other evaluated clip: cosine of Wav2CLIP audio and CLIP "
    "ViT-B/32 picture embeddings; the clip read mono at 44.1 kHz, zero-padded or cut to 442,763 samples, as SPEC 7 "
    "(after SonicDiffusion's script) says, although Wav2CLIP was trained on 10 s clips at 16 kHz; "
    "--wav2clip-rate 16000 feeds it that (160,000 samples); protocol.wav2clip_rate says which a run used",
    "IIS": "win rate of the clip's ground-truth frame over every other clip's frame, CLIP ViT-L/14 image embeddings",
    "AIC": "zero-shot CLIP ViT-L/14 top-1 over every class name of labels.csv (bare label text) == the clip's label",
    "FID": "Frechet distance of pytorch-fid Inception pool3 (2048-d) features, pictures vs frames, each picture "
    "as it is, resized inside the network to 299x299 (bilinear)",
    "CLIP": "OpenAI weights through open_clip, its preprocessing (224x224: shortest side resized bicubic, centre crop)",
    "frames": "an image, or one video frame drawn uniformly over the clip's 10 s (seeded by the clip's name alone)",
}


def intervals_note(options: EvaluationOptions) -> str:
    """How the intervals were drawn, for the JSON and the report."""
    return (
        f"95%, clips resampled, seed {options.seed}: AIS, IIS, AIC a percentile bootstrap of {options.bootstrap} "
        f"replicates (with replacement); FID plus the spread of {options.fid_bootstrap} FIDs of half the clips "
        "(without replacement: the delete-d jackknife; a bootstrap's repeated rows would inflate FID)"
    )


def metrics_to_compute(options: EvaluationOptions, clips: ClipSet) -> tuple[str, ...]:
    """The metrics asked for (or every one the inputs allow); one that lacks its inputs is refused."""
    if not options.metrics:
        return tuple(
            m
            for m in METRICS
            if not (m in NEEDS_FRAMES and clips.frames is None) and not (m in NEEDS_LABELS and clips.labels is None)
        )
    for metric in options.metrics:
        if metric in NEEDS_FRAMES and clips.frames is None:
            raise ConfigError(f"{metric} needs the ground-truth frames", hint="pass --frames DIR, or leave it out")
        if metric in NEEDS_LABELS and clips.labels is None:
            raise ConfigError(f"{metric} needs the clips' labels", hint="pass --labels labels.csv, or leave it out")
    return tuple(m for m in METRICS if m in options.metrics)


class Evaluator:
    """The models a metric set needs, loaded once, and the clip side's embeddings (audio, frames, class names),
    computed once: ``score`` then rates any number of picture sets drawn from ``clips`` (``compare`` rates two)."""

    def __init__(
        self,
        clips: ClipSet,
        models: Path,
        options: EvaluationOptions = EvaluationOptions(),
        progress: Progress | None = None,
    ):
        import torch

        from audiotoken import eval_models

        options.check()
        self.clips, self.options = clips, options
        self.metrics = metrics_to_compute(options, clips)
        self.progress = progress or (lambda stage, done, total: None)
        if options.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA device", hint="use --device cpu, or torch for CUDA")
        needed = eval_models.models_for(self.metrics)
        paths = {key: eval_models.model_path(Path(models), key) for key in needed}  # all checked before any work
        self.models = {key: eval_models.LOADERS[key](paths[key], options.device) for key in needed}
        self.clip_skipped: list[tuple[str, str]] = []  # clips and frames that could not be read
        self.clip_side = self.embed_clips()

    def batches(self, count: int) -> list[range]:
        size = self.options.batch_size
        return [range(start, min(start + size, count)) for start in range(0, count, size)]

    def embed_clips(self) -> dict[str, np.ndarray]:
        """Audio (Wav2CLIP), frames (CLIP ViT-L/14, Inception) and class names (CLIP ViT-L/14), with which clips
        were readable (``audio_ok``, ``frame_ok`` [K] bool); an unreadable clip or frame is skipped and reported."""
        from audiotoken import eval_models

        clips, out = self.clips, {}
        k = len(clips.names)
        if "AIS" in self.metrics:
            embedded, ok = [], np.zeros(k, dtype=bool)
            for batch in self.batches(k):
                waves = []
                for i in batch:
                    try:
                        waves.append(eval_models.wav2clip_audio(clips.audio[i], self.options.wav2clip_rate))  # [T]
                        ok[i] = True
                    except Exception as exc:  # decoders raise many types; the clip is reported and left out
                        self.clip_skipped.append((clips.audio[i].name, f"{type(exc).__name__}: {first_line(exc)}"))
                if waves:
                    embedded.append(self.models["wav2clip"].embed(np.stack(waves)))  # [b, 512]
                self.progress("clips: Wav2CLIP", batch.stop, k)
            out["audio"], out["audio_ok"] = stack(embedded), ok
        if clips.frames is not None and ("IIS" in self.metrics or "FID" in self.metrics):
            frames = [Picture(clips.frames[i].name, i, clips.frames[i]) for i in range(k)]
            side, skipped = self.embed_pictures(frames, "frames", ground_truth=True)
            self.clip_skipped += skipped
            out["frame_ok"] = np.zeros(k, dtype=bool)
            out["frame_ok"][side["clip"]] = True
            out["frame_l14"], out["frame_inception"] = side.get("l14"), side.get("inception")
        if "AIC" in self.metrics:
            self.progress("class names: CLIP ViT-L/14", 0, 1)
            out["classes"] = self.models["clip_l14"].embed_texts(list(clips.classes))  # [C, E]
            self.progress("class names: CLIP ViT-L/14", 1, 1)
        return out

    def embed_pictures(
        self, pictures: list[Picture], stage: str, ground_truth: bool = False
    ) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
        """The embeddings the metrics need of ``pictures`` (or of the clips' frames), batch by batch, each picture read
        once and dropped: ``b32`` [n, E], ``l14`` [n, E'], ``inception`` [n, 2048], and ``clip`` [n], the clip of each
        readable one; and the unreadable ones as (name, reason)."""
        wanted = {
            "b32": "AIS" in self.metrics and not ground_truth,
            "l14": "IIS" in self.metrics or ("AIC" in self.metrics and not ground_truth),
            "inception": "FID" in self.metrics,
        }
        model_of = {"b32": "clip_b32", "l14": "clip_l14", "inception": "inception"}
        parts: dict[str, list[np.ndarray]] = {key: [] for key, on in wanted.items() if on}
        kept, skipped = [], []
        for batch in self.batches(len(pictures)):
            images = []
            for i in batch:
                picture = pictures[i]
                try:
                    if ground_truth:
                        image = read_frame(picture.source, self.clips.names[picture.clip])
                    else:
                        image = read_picture(picture.source)
                except Exception as exc:  # PIL and FFmpeg raise many types for a bad file: reported and skipped
                    skipped.append((picture.name, f"{type(exc).__name__}: {first_line(exc)}"))
                    continue
                images.append(image)
                kept.append(picture.clip)
            if images:
                for key in parts:
                    parts[key].append(self.models[model_of[key]].embed_images(images))  # [b, E]
            self.progress(stage, batch.stop, len(pictures))
        embedded = {key: stack(value) for key, value in parts.items()}
        return {**embedded, "clip": np.asarray(kept, dtype=np.int64)}, skipped

    def score(self, pictures: list[Picture], stage: str = "pictures") -> Scores:
        """Every metric of ``pictures`` (drawn from this evaluator's clips), with counts and 95% intervals."""
        embedded, skipped = self.embed_pictures(pictures, stage)
        clip_of, side = embedded["clip"], self.clip_side  # [n] the clip of each readable picture
        results: dict[str, MetricResult] = {}
        for metric in self.metrics:
            rng = np.random.default_rng([self.options.seed, METRICS.index(metric)])  # its own, whatever else is asked
            if len(clip_of) == 0:
                results[metric] = MetricResult(metric, None, 0, note="no readable picture")
            elif metric == "AIS":
                results[metric] = self.win_rate_metric(
                    metric, embedded["b32"], clip_of, side["audio"], side["audio_ok"], rng
                )
            elif metric == "IIS":
                results[metric] = self.win_rate_metric(
                    metric, embedded["l14"], clip_of, side["frame_l14"], side["frame_ok"], rng
                )
            elif metric == "AIC":
                agree = class_agreement(embedded["l14"], side["classes"], np.asarray(self.clips.labels)[clip_of])
                results[metric] = self.mean_metric(metric, agree, clip_of, rng)
            else:
                results[metric] = self.fid_metric(embedded["inception"], clip_of, side, rng)
        return Scores(results, len(set(clip_of.tolist())), len(clip_of), self.clip_skipped + skipped, self.options)

    def mean_metric(self, name: str, scores: np.ndarray, groups: np.ndarray, rng) -> MetricResult:
        """The mean of per-picture scores, in percent, with its bootstrap interval."""
        ci = bootstrap_mean(scores, groups, self.options.bootstrap, rng)
        return MetricResult(name, 100 * float(scores.mean()), len(scores), (100 * ci[0], 100 * ci[1]) if ci else None)

    def win_rate_metric(self, name, queries, clip_of, targets, target_ok, rng) -> MetricResult:
        """AIS or IIS: win rates of the pictures whose clip has a target, against the other clips that have one."""
        row_of = np.cumsum(target_ok) - 1  # clip index -> row of its target among the readable ones
        usable = target_ok[clip_of]  # [n]
        if int(target_ok.sum()) < 2 or not usable.any():
            return MetricResult(name, None, 0, note="needs 2 readable clips or more")
        if queries.shape[1] != targets.shape[1]:
            raise ConfigError(
                f"{name}: pictures embed to {queries.shape[1]} values, their targets to {targets.shape[1]}",
                hint="AIS needs the CLIP that Wav2CLIP was trained against: OpenAI's ViT-B/32 (512-d) as ViT-B-32.pt",
            )
        rates = win_rates(queries[usable], targets, row_of[clip_of[usable]])  # [n']
        return self.mean_metric(name, rates, clip_of[usable], rng)

    def fid_metric(self, pictures: np.ndarray, clip_of: np.ndarray, side: dict, rng) -> MetricResult:
        """FID of the pictures' Inception features against the readable frames', with its interval (half-samples)."""
        frames, frame_clip = side["frame_inception"], np.flatnonzero(side["frame_ok"])  # [m, 2048], [m]
        if len(pictures) < 2 or len(frames) < 2:
            return MetricResult("FID", None, len(pictures), note="needs 2 pictures and 2 frames or more")
        value = frechet_distance(pictures, frames)
        ci = frechet_interval(
            pictures, clip_of, frames, frame_clip, self.options.fid_bootstrap, rng, self.progress, value
        )
        return MetricResult("FID", value, len(pictures), ci, note=f"against {len(frames)} frames")


def stack(parts: list[np.ndarray]) -> np.ndarray:
    """Batches of embeddings -> one [n, E] array ([0, 0] for none)."""
    return np.concatenate(parts) if parts else np.zeros((0, 0))
