"""The evaluation's models, read from the files their authors published, and the sha256 of every file read.

Place in the data flow: ``scoring.Evaluator`` names the models its metrics need -> ``model_files`` checks that their
files are in ``--models DIR`` (before any work) and ``file_records`` hashes them -> the loaders below embed pictures,
class names and clips (numpy out) -> the metrics. Nothing is downloaded at run time.

| in DIR                                   | model (metrics)                 | read by                                 |
|------------------------------------------|---------------------------------|-----------------------------------------|
| ``clip-vit-base-patch32/``               | OpenAI CLIP ViT-B/32 (AIS)      | transformers ``CLIPModel``, ``CLIPTokenizer`` |
| ``clip-vit-large-patch14/``              | OpenAI CLIP ViT-L/14 (IIS, AIC) | transformers ``CLIPModel``, ``CLIPTokenizer`` |
| ``Wav2CLIP.pt``                          | Wav2CLIP (AIS)                  | ``networks.Wav2Clip``                   |
| ``pt_inception-2015-12-05-6726825d.pth`` | the FID Inception (FID)         | ``networks.FidInception``               |

The CLIP folders are the Hugging Face repositories ``openai/clip-vit-base-patch32`` and ``openai/clip-vit-large-
patch14`` (``config.json``, the weights, the tokenizer files). CLIP sees each picture through OpenAI's own
preprocessing (``clip_pixels``), not transformers' ``CLIPImageProcessor``, whose centre crop starts at
floor((side - 224) / 2) where OpenAI's (torchvision's) rounds, one pixel apart for some picture sizes.

The published weights' sha256 (``ModelSpec.published``) are public facts, each read from two places or more: the Hub's LFS pointers of
the openai repositories' weights (as shown for the repositories duplicated from them: ``rootflo/clip-vit-base-
patch32`` and ``RaphaelLiu/EvalCrafter-Models`` for ViT-B/32's ``pytorch_model.bin``; ``Fluf22/openai-clip-large``,
``InvokeAI/clip-vit-large-patch14``, ``baseplate/clip-vit-large-patch14`` and ``finhdev/openaitestclip`` for
ViT-L/14's two files) and, for pytorch-fid's Inception, projects that pin it (95,628,359 bytes; the same file is
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``, and its name carries the hash's first 8 digits, as
torch.hub names files). No public sha256 of ``Wav2CLIP.pt`` was found: its record says so, and so does every report
that used it. A run records every file it read (``file_records``): the weights against their published sha256, the
configuration and tokenizer files by hash alone (no sha256 of those small files is published).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from audiotoken.checkpoints import load_strict, read_torch_file
from audiotoken.evaluation.networks import FidInception, Wav2Clip
from runtime.bundle import file_sha256
from runtime.errors import CheckpointError, ConfigError, first_line

CLIP_CONFIG = "config.json"
CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # transformers' order of preference
CLIP_TOKENIZER = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class ModelSpec:
    """One model of ``--models DIR``: its file or folder there, what it is, where it is published (for a CLIP, the
    Hub repository, of which ``hub_files`` are read, its weights first), and the sha256 of its published weights
    files, by their path in DIR (empty where none is known)."""

    name: str
    what: str
    source: str
    published: dict[str, str]
    hub_files: tuple[str, ...] = ()

    def fetch(self, folder: Path) -> str:
        """How to put this model into ``folder``."""
        if self.hub_files:
            repo = self.source.removeprefix("https://huggingface.co/")
            return f"hf download {repo} {' '.join(self.hub_files)} --local-dir {Path(folder) / self.name}"
        return f"download {self.source} into {folder}"


MODELS = {
    "clip_b32": ModelSpec(
        "clip-vit-base-patch32",
        "OpenAI CLIP ViT-B/32 (AIS)",
        "https://huggingface.co/openai/clip-vit-base-patch32",
        {"clip-vit-base-patch32/pytorch_model.bin": "a63082132ba4f97a80bea76823f544493bffa8082296d62d71581a4feff1576f"},
        ("pytorch_model.bin", CLIP_CONFIG, *CLIP_TOKENIZER),  # the repository has no model.safetensors
    ),
    "clip_l14": ModelSpec(
        "clip-vit-large-patch14",
        "OpenAI CLIP ViT-L/14 (IIS, AIC)",
        "https://huggingface.co/openai/clip-vit-large-patch14",
        {
            "clip-vit-large-patch14/model.safetensors": "a2bf730a0c7debf160f7a6b50b3aaf3703e7e88ac73de7a314903141db026dcb",
            "clip-vit-large-patch14/pytorch_model.bin": "f1a17cdbe0f36fec524f5cafb1c261ea3bbbc13e346e0f74fc9eb0460dedd0d3",
        },
        ("model.safetensors", CLIP_CONFIG, *CLIP_TOKENIZER),
    ),
    "wav2clip": ModelSpec(
        "Wav2CLIP.pt",
        "the Wav2CLIP checkpoint (AIS)",
        "https://github.com/descriptinc/lyrebird-wav2clip/releases/download/v0.1.0-alpha/Wav2CLIP.pt",
        {},  # no public sha256 of it was found (module docstring)
    ),
    "inception": ModelSpec(
        "pt_inception-2015-12-05-6726825d.pth",
        "pytorch-fid's FID Inception weights (FID)",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        {"pt_inception-2015-12-05-6726825d.pth": "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"},
    ),
}
MODELS_OF_METRIC = {"AIS": ("clip_b32", "wav2clip"), "IIS": ("clip_l14",), "AIC": ("clip_l14",), "FID": ("inception",)}


def models_for(metrics) -> tuple[str, ...]:
    """The models the metrics need, in MODELS order."""
    needed = {key for metric in metrics for key in MODELS_OF_METRIC[metric]}
    return tuple(key for key in MODELS if key in needed)


def not_found(folder: Path, key: str, problem: str) -> ConfigError:
    spec = MODELS[key]
    return ConfigError(
        f"{Path(folder) / spec.name}: {problem}", hint=f"{spec.fetch(folder)} (nothing is downloaded at run time)"
    )


def model_files(folder: Path, key: str) -> list[Path]:
    """The files of model ``key`` in ``folder`` that its loader reads, its weights first. A missing one is a
    one-line error naming it and how to get it; a ``folder`` that is a file, one saying so."""
    folder, spec = Path(folder), MODELS[key]
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"--models {folder}: is not a folder",
            hint="pass the folder that holds the evaluation models (docs/evaluation.md lists them)",
        )
    path = folder / spec.name
    if not (path.is_dir() if spec.hub_files else path.is_file()):
        raise not_found(folder, key, f"{spec.what} not found")
    if not spec.hub_files:
        return [path]
    weights = [path / name for name in CLIP_WEIGHTS if (path / name).is_file()]
    tokenizer = [path / name for name in CLIP_TOKENIZER if (path / name).is_file()]
    lacking = [
        part
        for part, absent in (
            (CLIP_CONFIG, not (path / CLIP_CONFIG).is_file()),
            (" or ".join(CLIP_WEIGHTS), not weights),
            ("the tokenizer files", not tokenizer),
        )
        if absent
    ]
    if lacking:
        raise not_found(folder, key, f"{spec.what}: no {', no '.join(lacking)}")
    return [weights[0], path / CLIP_CONFIG, *tokenizer]


# ---- what was read --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """One file a run read: its model, its path in ``--models``, its sha256, and for a weights file the published
    file's sha256 (None where none is known)."""

    model: str
    file: str
    sha256: str
    weights: bool
    published_sha256: str | None = None

    @property
    def status(self) -> str:
        if not self.weights:
            return "configuration (recorded, not checked)"
        if self.published_sha256 is None:
            return "no published sha256 known"
        return "the published file" if self.sha256 == self.published_sha256 else "NOT the published file"

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "file": self.file,
            "sha256": self.sha256,
            "weights": self.weights,
            "published_sha256": self.published_sha256,
            "status": self.status,
        }


def file_records(folder: Path, files: dict[str, list[Path]]) -> list[FileRecord]:
    """The sha256 of every file of ``files`` (model -> its files, weights first, from ``model_files``)."""
    records = []
    for key, paths in files.items():
        for i, path in enumerate(paths):
            name = path.relative_to(folder).as_posix()
            published = MODELS[key].published.get(name) if i == 0 else None
            records.append(FileRecord(MODELS[key].what, name, file_sha256(path), i == 0, published))
    return records


# ---- the models -----------------------------------------------------------------------------------------------------


def checkpoint_error(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path}: does not load ({type(exc).__name__}: {first_line(exc)})",
        hint="is it the published file? (docs/evaluation.md lists them)",
    )


def clip_pixels(image: Image.Image, side: int) -> np.ndarray:
    """A picture as OpenAI's CLIP preprocessing sees it: the shorter side resized to ``side`` (bicubic, the longer
    one in proportion, rounded down), the centre ``side`` x ``side`` cut out (offsets rounded, as torchvision's
    ``CenterCrop``), scaled to [0, 1] and standardised with OpenAI's mean and deviation -> [3, side, side] float32."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    width, height = image.size
    short, long = min(width, height), max(width, height)
    scaled = (side, int(side * long / short))
    size = scaled if width <= height else scaled[::-1]  # (width, height)
    resized = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    left, top = int(round((size[0] - side) / 2.0)), int(round((size[1] - side) / 2.0))
    crop = np.asarray(resized.crop((left, top, left + side, top + side)), dtype=np.float32) / 255  # [S, S, 3]
    standard = (crop - np.asarray(OPENAI_CLIP_MEAN, np.float32)) / np.asarray(OPENAI_CLIP_STD, np.float32)
    return np.ascontiguousarray(standard.transpose(2, 0, 1))  # [3, S, S]


class ClipModel:
    """An OpenAI CLIP from its transformers folder: pictures and class names -> unit-length embeddings [N, E]."""

    def __init__(self, folder: Path, device: str):
        from transformers import CLIPModel, CLIPTokenizer

        weights = next(folder / name for name in CLIP_WEIGHTS if (folder / name).is_file())
        try:
            self.model, loading = CLIPModel.from_pretrained(
                folder,
                local_files_only=True,
                use_safetensors=weights.name.endswith(".safetensors"),
                dtype=torch.float32,
                output_loading_info=True,
            )
            self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # transformers, safetensors and torch.load raise many types for a foreign folder
            raise checkpoint_error(folder, exc) from exc
        absent = [*map(str, loading["missing_keys"]), *map(str, loading["mismatched_keys"])]
        if absent:  # transformers would fill them with random values
            raise CheckpointError(
                f"{weights}: does not hold the CLIP its config.json describes (missing or mis-shaped: "
                f"{', '.join(sorted(absent)[:4])})",
                hint="is it the published file? (docs/evaluation.md lists them)",
            )
        self.model.eval().to(device)
        self.side = self.model.config.vision_config.image_size
        self.context = self.model.config.text_config.max_position_embeddings
        self.device = device

    @torch.inference_mode()
    def embed_images(self, images: list) -> np.ndarray:
        pixels = torch.from_numpy(np.stack([clip_pixels(image, self.side) for image in images])).to(self.device)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output  # [B, width]
        return F.normalize(self.model.visual_projection(pooled), dim=-1).float().cpu().numpy()  # [B, E]

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Bare class names (one template, "{}", as the zero-shot classifier of docs/method.md#evaluation-metrics)
        -> [C, E]."""
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.context, truncation=True, return_tensors="pt"
        ).to(self.device)
        pooled = self.model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        projected = self.model.text_projection(pooled.pooler_output)  # [C, E]
        return F.normalize(projected, dim=-1).float().cpu().numpy()  # [C, E]


class Wav2ClipModel:
    """Wav2CLIP with its released checkpoint (``networks.Wav2Clip``): waveforms [B, T] (``inputs.wav2clip_audio``)
    -> embeddings [B, 512]."""

    def __init__(self, path: Path, device: str):
        spec = MODELS["wav2clip"]
        checkpoint = read_torch_file(path, spec.what, spec.fetch(path.parent))
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"{path}: is not a state dict", hint="is it the published file?")
        state = {k: v for k, v in checkpoint.items() if k.startswith(("audio_encoder.", "audio_transform."))}
        self.model = Wav2Clip()
        load_strict(self.model, state, str(path))
        self.model.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(waveforms, dtype=np.float32)).to(self.device)  # [B, T]
        return self.model(batch).float().cpu().numpy()  # [B, 512]


class InceptionModel:
    """The FID Inception (``networks.FidInception``: pool3 features), fed as pytorch-fid feeds it: each picture as a
    [0, 1] tensor at its own size, resized to 299x299 inside the network -> features [N, 2048]."""

    def __init__(self, path: Path, device: str):
        spec = MODELS["inception"]
        state = read_torch_file(path, spec.what, spec.fetch(path.parent))
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: is not a state dict", hint="is it the published file?")
        self.model = FidInception()
        load_strict(self.model, state, str(path))
        self.model.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def embed_images(self, images: list) -> np.ndarray:
        features = np.zeros((len(images), 2048))
        sizes: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):  # one batch per picture size (frames and pictures may differ)
            sizes.setdefault(image.size, []).append(i)
        for indices in sizes.values():
            pixels = np.stack([np.asarray(images[i].convert("RGB")) for i in indices])  # [B, H, W, 3] uint8
            batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255).to(self.device)  # [B, 3, H, W]
            features[indices] = self.model(batch).double().cpu().numpy()  # [B, 2048]
        return features


LOADERS = {"clip_b32": ClipModel, "clip_l14": ClipModel, "wav2clip": Wav2ClipModel, "inception": InceptionModel}
