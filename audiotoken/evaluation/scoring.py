"""The paper's evaluation (docs/method.md#evaluation-metrics): AIS, IIS, AIC and FID of pictures drawn from sound clips.

Place in the data flow: ``inputs.gather`` pairs pictures with their clips, labels and frames -> ``Evaluator`` loads
the models its metrics need once (``models``: the files checked and hashed first), embeds the clip side once
(Wav2CLIP audio, frames, class names) and then any number of picture sets (``compare`` scores two) -> ``metrics``
-> ``Scores``: each metric with its count and 95% interval, and the sha256 of every model file read (table, JSON,
report).

AIS, IIS and AIC are reported in percent, as the paper's table. The reference set of a win rate is every other
evaluated clip (SonicDiffusion used a cached random set of dataset clips, which is not public). Each metric's
interval has its own random stream (seeded by the seed and the metric), so one metric's interval does not depend on
which others were asked for. Importing this module needs no torch (``Evaluator`` imports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiotoken.evaluation.inputs import (
    WAV2CLIP_RATE,
    WAV2CLIP_SAMPLES,
    ClipSet,
    Picture,
    read_frame,
    read_picture,
    wav2clip_audio,
)
from audiotoken.evaluation.metrics import (
    Progress,
    bootstrap_mean,
    class_agreement,
    frechet_distance,
    frechet_interval,
    win_rates,
)
from runtime.errors import ConfigError, first_line

METRICS = ("AIS", "IIS", "AIC", "FID")
PERCENT = ("AIS", "IIS", "AIC")  # win rates and accuracy, reported x100 as in the paper
# AudioToken on VGGSound, the paper's table (docs/method.md#evaluation-metrics)
PAPER = {"AIS": 68.23, "IIS": 76.66, "AIC": 45.48, "FID": 56.65}
NEEDS_FRAMES = ("IIS", "FID")
NEEDS_LABELS = ("AIC",)
MAX_REPLICATES = 100_000  # of an interval: beyond, the run takes hours and the percentiles move no more
MAX_BATCH = 1024  # pictures or clips per model call


@dataclass(frozen=True)
class EvaluationOptions:
    """How to evaluate; the ``help`` of each field is the ``audiotoken-rt evaluate`` (and ``compare``) option's help."""

    metrics: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Metrics to compute, comma-separated (AIS,IIS,AIC,FID); default: all the inputs allow."},
    )
    bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap replicates (clips resampled) of the AIS, IIS and AIC intervals."}
    )
    fid_bootstrap: int = field(
        default=100,
        metadata={
            "help": "Replicates of the FID interval, each the FID of a random half of the clips (docs/evaluation.md)."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the intervals' replicates (not of the pictures, nor of the frames)."}
    )
    device: str = field(default="cpu", metadata={"help": "Where the evaluation models run: cpu, or cuda."})
    batch_size: int = field(default=16, metadata={"help": "Pictures (or clips) per model call."})
    wav2clip_rate: int = field(
        default=WAV2CLIP_RATE,
        metadata={
            "help": "Rate Wav2CLIP hears the clips at (AIS): 44100, 442,763 samples, as SonicDiffusion's script; "
            "or 16000, 160,000 samples, the rate Wav2CLIP was trained at."
        },
    )

    def check(self) -> None:
        """One line naming the option for a value out of its range."""
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ConfigError(f"--metrics: unknown metric(s) {', '.join(unknown)}; choose from {','.join(METRICS)}")
        for option, value in (("--bootstrap", self.bootstrap), ("--fid-bootstrap", self.fid_bootstrap)):
            if not 0 <= value <= MAX_REPLICATES:
                raise ConfigError(f"{option} {value}: expected 0 to {MAX_REPLICATES:,} replicates")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(f"--batch-size {self.batch_size}: expected 1 to {MAX_BATCH}")
        if self.wav2clip_rate not in WAV2CLIP_SAMPLES:
            raise ConfigError(
                f"--wav2clip-rate {self.wav2clip_rate}: expected {' or '.join(map(str, WAV2CLIP_SAMPLES))} Hz"
            )


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"ais, FID"`` -> ("AIS", "FID"); None or empty -> () (every metric the inputs allow)."""
    return tuple(dict.fromkeys(m.strip().upper() for m in (text or "").split(",") if m.strip()))


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
    """Every metric of one picture set, what was counted, what was skipped (file, reason), and the model files read."""

    metrics: dict[str, MetricResult]
    clips: int
    pictures: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    options: EvaluationOptions = EvaluationOptions()
    model_files: list = field(default_factory=list)  # models.FileRecord of every model file read

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
            "models": [record.as_json() for record in self.model_files],
            "published_models": not unverified_models(self.model_files),
        }


def unverified_models(records: list) -> list[str]:
    """The weights files among ``records`` (models.FileRecord) not known to be the published ones, each with why."""
    return [f"{r.file}: {r.status}" for r in records if r.weights and r.status != "the published file"]


PROTOCOL = {
    "AIS": "win rate of the picture's own clip over every other evaluated clip: cosine of Wav2CLIP audio and CLIP "
    "ViT-B/32 picture embeddings; the clip read mono at 44.1 kHz, zero-padded or cut to 442,763 samples, as "
    "SonicDiffusion's script does, although Wav2CLIP was trained on 10 s clips at 16 kHz; "
    "--wav2clip-rate 16000 feeds it that (160,000 samples); protocol.wav2clip_rate says which a run used",
    "IIS": "win rate of the clip's ground-truth frame over every other clip's frame, CLIP ViT-L/14 image embeddings",
    "AIC": "zero-shot CLIP ViT-L/14 top-1 over every class name of labels.csv (bare label text) == the clip's label",
    "FID": "Frechet distance of the FID Inception's pool3 (2048-d) features (pytorch-fid's network and weights), "
    "pictures vs frames, each picture as it is, resized inside the network to 299x299 (bilinear)",
    "CLIP": "OpenAI's weights in transformers' format (CLIPModel), OpenAI's preprocessing (224x224: shortest side "
    "resized bicubic, centre crop)",
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

        from audiotoken.evaluation import models as eval_models

        options.check()
        self.clips, self.options = clips, options
        self.metrics = metrics_to_compute(options, clips)
        self.progress = progress or (lambda stage, done, total: None)
        if options.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA device", hint="use --device cpu, or torch for CUDA")
        needed = eval_models.models_for(self.metrics)
        files = {key: eval_models.model_files(Path(models), key) for key in needed}  # all checked before any work
        self.model_files = eval_models.file_records(Path(models), files)
        self.models = {
            key: eval_models.LOADERS[key](Path(models) / eval_models.MODELS[key].name, options.device) for key in needed
        }
        self.clip_skipped: list[tuple[str, str]] = []  # clips and frames that could not be read
        self.clip_side = self.embed_clips()

    def batches(self, count: int) -> list[range]:
        size = self.options.batch_size
        return [range(start, min(start + size, count)) for start in range(0, count, size)]

    def embed_clips(self) -> dict[str, np.ndarray]:
        """Audio (Wav2CLIP), frames (CLIP ViT-L/14, Inception) and class names (CLIP ViT-L/14), with which clips
        were readable (``audio_ok``, ``frame_ok`` [K] bool); an unreadable clip or frame is skipped and reported."""
        clips, out = self.clips, {}
        k = len(clips.names)
        if "AIS" in self.metrics:
            embedded, ok = [], np.zeros(k, dtype=bool)
            for batch in self.batches(k):
                waves = []
                for i in batch:
                    try:
                        waves.append(wav2clip_audio(clips.audio[i], self.options.wav2clip_rate))  # [T]
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
        return Scores(
            results,
            len(set(clip_of.tolist())),
            len(clip_of),
            self.clip_skipped + skipped,
            self.options,
            self.model_files,
        )

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
                hint="AIS needs the CLIP Wav2CLIP was trained against: OpenAI's ViT-B/32 (512-d), clip-vit-base-patch32/",
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
