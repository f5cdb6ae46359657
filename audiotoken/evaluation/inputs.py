"""What is evaluated: pictures paired with the clips they were drawn from, the clips' labels and ground-truth frames,
and each clip as Wav2CLIP hears it.

Place in the data flow: ``generate`` (or ``compare``) writes pictures named after their clips -> ``gather`` pairs
them with the clips, their ``labels.csv`` labels and frames (a ``ClipSet`` and its ``Picture``s) ->
``evaluation.scoring`` reads each picture, frame (``read_picture``, ``read_frame``) and clip (``wav2clip_audio``)
once, for the models.

A video's frame is drawn from the clip's name alone (``FRAME_SEED``): the options' seed is the intervals' only.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.errors import ConfigError

PictureSource = Path | Image.Image

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FRAME_SEED = 0  # with the clip's name, which frame of a ground-truth video is read (independent of the options' seed)
WAV2CLIP_RATE = 44_100  # Hz, the default: how SonicDiffusion's script feeds Wav2CLIP (librosa.load(sr=44100))
WAV2CLIP_SAMPLES = {  # Hz -> Wav2CLIP's fixed input length at that rate, zero-padded (or cut) to it
    44_100: 442_763,  # SonicDiffusion's (docs/method.md#evaluation-metrics): 10.04 s
    16_000: 160_000,  # Wav2CLIP's own training input: 10 s at 16 kHz (wav2clip's pre_training dataset)
}


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


def wav2clip_audio(path: Path, rate: int = WAV2CLIP_RATE) -> np.ndarray:
    """A clip as Wav2CLIP hears it: by default as SonicDiffusion's script feeds it (docs/method.md#evaluation-metrics),
    librosa at 44.1 kHz mono, zero-padded (or cut) to 442,763 samples; at ``rate`` 16000, Wav2CLIP's own training input,
    160,000 samples (10 s) -> [T] float32."""
    import librosa

    samples = WAV2CLIP_SAMPLES[rate]
    wave, _ = librosa.load(str(path), sr=rate, mono=True, dtype=np.float32)  # [T']
    if len(wave) == 0:
        raise ValueError("the clip holds no samples")
    return np.pad(wave[:samples], (0, max(0, samples - len(wave))))  # [T]
