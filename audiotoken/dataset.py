"""Paired training data: a folder of sound clips and their pictures -> (audio window, picture) samples.

Place in the data flow (docs/method.md#training): ``DATA/`` -> ``scan_dataset`` (pairing, filters, the report of
what is left out) -> ``PairedClips`` (one sample per position of a seeded stream) -> ``audiotoken.training``
(frozen BEATs features and Stable Diffusion loss for the trainable embedder).

Layout of ``DATA/``:
- ``audio/<name>.<wav|flac|ogg|mp3>``: the clips, decoded by ``runtime.audio.load_audio`` (16 kHz mono,
  loop-tiled to 10 s), then a random L-second window with an integer start in {0 .. 10 - L - 1}
  (docs/method.md#audio);
- ``images/<name>.<png|jpg|jpeg>`` or ``video/<name>.mp4``: the picture. From a video, one frame is drawn
  uniformly inside the audio window, frames [(total // 10) * start, (total // 10) * (start + L)], clamped to
  the last frame (docs/method.md#training, quirk Q11). An image wins over a video of the same name;
- ``labels.csv`` with columns ``name,label,split``: only ``split == train`` rows are used; the label feeds
  the optional cosine loss. Exclude lists (one name per line) drop clips, e.g. VGGSound's unmatched or
  low-quality lists; an entry matches a name or, for VGGSound names ``<id>_<start>_<end>``, its id.
Pictures are resized to the training size (512 wide x 320 high by default, bicubic, docs/method.md#quirks, Q3)
and mapped to [-1, 1] (x / 127.5 - 1).

Determinism: the sample at stream position p is a pure function of (seed, p). Epoch p // n visits the clips
in a permutation seeded by (seed, epoch); the window start and the video frame come from a generator seeded
by (seed, p). The order never depends on workers or on where a run was resumed.

Bad files: ``scan_dataset`` probes every file's header and reports the unreadable ones, which are left out.
A file that passes the probe but fails to decode is replaced by the clip at the next stream position (so
the replacement depends on the files only, not on history) and named in the sample's ``skipped`` list.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file, save
from torch.utils.data import Dataset, Sampler

from runtime.atomic import write_atomically
from runtime.audio import load_audio
from runtime.contract import CLIP_SECONDS, SAMPLE_RATE
from runtime.errors import ConfigError, first_line

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # in order of preference when a name has several
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4",)
LABEL_COLUMNS = ("name", "label", "split")
TRAIN_SPLIT = "train"
ORDER_STREAM, SAMPLE_STREAM = 0, 1  # independent seed streams: epoch permutations | per-sample draws

# the reasons a clip is left out, as the report names them
NO_AUDIO = "no audio file"
NO_PICTURE = "no image or video"
NO_LABEL = "no labels.csv row"
OTHER_SPLIT = "labels.csv split is not 'train'"
EXCLUDED = "in an exclude list"
BAD_AUDIO = "unreadable audio"
BAD_PICTURE = "unreadable image or video"


@dataclass(frozen=True)
class Clip:
    """One usable training pair."""

    name: str
    audio: Path
    picture: Path  # an image, or an mp4 whose frame is drawn inside the audio window
    label: str

    @property
    def is_video(self) -> bool:
        return self.picture.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class DataReport:
    """What ``scan_dataset`` found: the number of usable pairs and the names left out, by reason."""

    root: Path
    used: int = 0
    left_out: dict[str, list[str]] = field(default_factory=dict)

    def count(self, reason: str) -> int:
        return len(self.left_out.get(reason, []))

    def lines(self, examples: int = 3) -> list[str]:
        """One line per reason: count and the first few names."""
        out = [f"{self.root}: {self.used} usable pairs"]
        for reason, names in self.left_out.items():
            shown = ", ".join(names[:examples]) + (", ..." if len(names) > examples else "")
            out.append(f"left out, {reason}: {len(names)} ({shown})")
        return out


def files_by_name(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """{stem: path} of the files in ``folder`` with one of ``suffixes`` (earlier suffixes win)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    rank = {suffix: i for i, suffix in enumerate(suffixes)}
    for path in sorted(folder.iterdir(), key=lambda p: (p.stem, rank.get(p.suffix.lower(), len(rank)))):
        if path.is_file() and path.suffix.lower() in rank:
            found.setdefault(path.stem, path)
    return found


def read_labels(path: Path) -> dict[str, tuple[str, str]]:
    """``labels.csv`` -> {name: (label, split)}; the first row of a name wins (as the official loader)."""
    if not path.is_file():
        raise ConfigError(
            f"{path}: labels file not found", hint=f"write a CSV with the header {','.join(LABEL_COLUMNS)}"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(
                f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}",
                hint=f"the header must hold {','.join(LABEL_COLUMNS)}",
            )
        rows: dict[str, tuple[str, str]] = {}
        for row in reader:
            rows.setdefault(row["name"].strip(), (row["label"].strip(), row["split"].strip()))
    return rows


def read_exclude_list(path: Path) -> set[str]:
    """A text file of names (or VGGSound ids), one per line; blank lines and ``#`` comments are ignored."""
    if not path.is_file():
        raise ConfigError(f"{path}: exclude list not found", hint="pass a text file with one clip name per line")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def is_excluded(name: str, excluded: set[str]) -> bool:
    """A name is excluded by itself or, for VGGSound's ``<id>_<start>_<end>``, by its id."""
    return name in excluded or (name.count("_") >= 2 and name.rsplit("_", 2)[0] in excluded)


def audio_is_readable(path: Path) -> bool:
    """Header probe with libsndfile (fast: nothing is decoded)."""
    try:
        return sf.info(str(path.absolute())).frames > 0
    except Exception:  # libsndfile and the OS raise several types for a foreign, empty or damaged file
        return False


def picture_is_readable(path: Path) -> bool:
    """Header probe: PIL's ``verify`` for an image, a video stream for an mp4."""
    try:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            import av

            with av.open(str(path)) as container:
                return len(container.streams.video) > 0
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL and FFmpeg raise many types (OSError, SyntaxError, ValueError, ...) for a bad file
        return False


def scan_dataset(root: str | Path, exclude_lists: tuple[Path, ...] = ()) -> tuple[list[Clip], DataReport]:
    """Pair the clips of ``root`` with their pictures and labels; report everything left out and why."""
    root = Path(root)
    if not (root / "audio").is_dir():
        raise ConfigError(
            f"{root}: no audio/ folder", hint="expected DATA/audio, DATA/images or DATA/video, DATA/labels.csv"
        )
    audio = files_by_name(root / "audio", AUDIO_SUFFIXES)
    pictures = {**files_by_name(root / "video", VIDEO_SUFFIXES), **files_by_name(root / "images", IMAGE_SUFFIXES)}
    labels = read_labels(root / "labels.csv")
    excluded = set().union(*(read_exclude_list(Path(p)) for p in exclude_lists))

    clips, report = [], DataReport(root)
    for name in sorted(audio.keys() | pictures.keys() | labels.keys()):
        label, split = labels.get(name, (None, None))
        if split is not None and split != TRAIN_SPLIT:
            reason = OTHER_SPLIT
        elif is_excluded(name, excluded):
            reason = EXCLUDED
        elif name not in audio:
            reason = NO_AUDIO
        elif name not in pictures:
            reason = NO_PICTURE
        elif label is None:
            reason = NO_LABEL
        elif not audio_is_readable(audio[name]):
            reason = BAD_AUDIO
        elif not picture_is_readable(pictures[name]):
            reason = BAD_PICTURE
        else:
            clips.append(Clip(name, audio[name], pictures[name], label))
            continue
        report.left_out.setdefault(reason, []).append(name)
    report.used = len(clips)
    return clips, report


def load_window(path: Path, start: int, seconds: int) -> np.ndarray:
    """The L-second window from ``start`` s of the clip loop-tiled to 10 s: [L * 16000] float32."""
    wave = load_audio(path)  # [160000]
    return wave[start * SAMPLE_RATE : (start + seconds) * SAMPLE_RATE]  # [L * 16000]


def frame_window(total: int, start: int, seconds: int) -> tuple[int, int]:
    """Inclusive frame range of the audio window, assuming a 10 s video; clamped to the last frame
    (docs/method.md#quirks, Q11)."""
    per_second = total // CLIP_SECONDS
    return min(per_second * start, total - 1), min(per_second * (start + seconds), total - 1)


def read_video_frame(path: Path, start: int, seconds: int, rng: np.random.Generator):
    """One frame drawn uniformly inside the audio window, as a PIL RGB image (frames counted by decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total = stream.frames
        if not total and stream.average_rate and container.duration:  # no frame count in the header: estimate
            total = int(container.duration / av.time_base * stream.average_rate)
        if not total:
            raise ValueError("the video has no frame count or duration")
        low, high = frame_window(total, start, seconds)
        index = int(rng.integers(low, high + 1))
        frame = None
        for i, frame in enumerate(container.decode(stream)):  # noqa: B007 (a short estimate falls back to the last frame)
            if i == index:
                break
        if frame is None:
            raise ValueError("the video holds no decodable frame")
        return frame.to_image()


def picture_tensor(image, size: tuple[int, int]) -> torch.Tensor:
    """PIL image -> [3, H, W] float32 in [-1, 1], resized bicubic to ``size`` = (width, height)."""
    rgb = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.float32)  # [H, W, 3]
    return torch.from_numpy(rgb / 127.5 - 1.0).permute(2, 0, 1).contiguous()  # [3, H, W]


class FeatureCache:
    """BEATs features per (clip, window start) on disk, one safetensors file each, float32.

    ``folder`` should name the BEATs checkpoint and the window length (``audiotoken.training`` keys it by the
    checkpoint's sha256 and L), since the features depend on both. Files are written atomically, so several
    processes and workers may share the folder. Delete it after changing a clip's audio.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, start: int) -> Path:
        return self.folder / f"{name}@{start}.safetensors"

    def load(self, name: str, start: int) -> torch.Tensor | None:
        path = self.path(name, start)
        return load_file(path)["features"] if path.is_file() else None  # [N, 3C]

    def save(self, name: str, start: int, features: torch.Tensor) -> None:
        write_atomically(
            self.path(name, start), save({"features": features.detach().float().cpu().contiguous()})
        )  # [N, 3C]


class PairedClips(Dataset):
    """Map-style dataset over an endless seeded stream: ``dataset[p]`` is the sample at stream position p.

    A sample is a dict: ``name``, ``label`` (index into ``labels``), ``start`` (window start, s), ``image``
    [3, H, W], and either ``audio`` [L * 16000] or, when the feature cache holds this window, ``features``
    [N, 3C]; ``skipped`` lists the clips that failed to decode on the way, as (name, reason).
    """

    def __init__(
        self, clips: list[Clip], seed: int, seconds: int, size: tuple[int, int], cache: FeatureCache | None = None
    ):
        if not 1 <= seconds < CLIP_SECONDS:
            raise ConfigError(
                f"audio window of {seconds} s: expected 1 to {CLIP_SECONDS - 1} s (the start is drawn in 0 .. 10 - L - 1)"
            )
        self.clips = clips
        self.labels = sorted({clip.label for clip in clips})
        self.seed, self.seconds, self.size, self.cache = seed, seconds, size, cache
        self._epoch, self._order = -1, np.arange(0)

    def clip_at(self, position: int) -> Clip:
        epoch, index = divmod(position, len(self.clips))
        if epoch != self._epoch:
            self._epoch, self._order = (
                epoch,
                np.random.default_rng([self.seed, ORDER_STREAM, epoch]).permutation(len(self.clips)),
            )
        return self.clips[self._order[index]]

    def __getitem__(self, position: int) -> dict:
        skipped = []
        for candidate in range(position, position + len(self.clips)):
            clip = self.clip_at(candidate)
            rng = np.random.default_rng([self.seed, SAMPLE_STREAM, position])  # the draws belong to the position
            try:
                return {**self.load(clip, rng), "skipped": skipped}
            except Exception as exc:  # any decoder error: skip the clip, say why
                skipped.append((clip.name, f"{type(exc).__name__}: {first_line(exc)}"))
        raise ConfigError(
            f"every clip failed to load; the last, {skipped[-1][0]}: {skipped[-1][1]}", hint="check the dataset files"
        )

    def load(self, clip: Clip, rng: np.random.Generator) -> dict:
        start = int(rng.integers(0, CLIP_SECONDS - self.seconds))  # {0 .. 10 - L - 1}, docs/method.md#audio
        if clip.is_video:
            image = read_video_frame(clip.picture, start, self.seconds, rng)
        else:
            with Image.open(clip.picture) as file:
                image = file.convert("RGB")
        sample = {
            "name": clip.name,
            "label": self.labels.index(clip.label),
            "start": start,
            "image": picture_tensor(image, self.size),
        }  # [3, H, W]
        features = self.cache.load(clip.name, start) if self.cache else None
        if features is not None:
            return {**sample, "features": features}  # [N, 3C]
        return {**sample, "audio": torch.from_numpy(load_window(clip.audio, start, self.seconds))}  # [L * 16000]


class StreamPositions(Sampler):
    """The stream positions one process reads for micro-steps [first, last): micro-step m, process r, slot j
    reads position (m * processes + r) * batch + j, so processes never share a sample."""

    def __init__(self, first: int, last: int, processes: int, rank: int, batch: int):
        self.first, self.last, self.processes, self.rank, self.batch = first, last, processes, rank, batch

    def __len__(self) -> int:
        return max(0, self.last - self.first) * self.batch

    def __iter__(self):
        for micro in range(self.first, self.last):
            base = (micro * self.processes + self.rank) * self.batch
            yield from range(base, base + self.batch)


def collate_samples(samples: list[dict]) -> dict:
    """Samples -> a batch: images stacked [B, 3, H, W], labels and starts [B], per-sample audio/features lists."""
    return {
        "names": [s["name"] for s in samples],
        "starts": [s["start"] for s in samples],
        "labels": torch.tensor([s["label"] for s in samples]),  # [B]
        "images": torch.stack([s["image"] for s in samples]),  # [B, 3, H, W]
        "audio": [s.get("audio") for s in samples],  # [L * 16000] or None
        "features": [s.get("features") for s in samples],  # [N, 3C] or None
        "skipped": [pair for s in samples for pair in s["skipped"]],  # (name, reason)
    }
