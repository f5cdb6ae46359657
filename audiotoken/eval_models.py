"""The evaluation's models, read from local files in their published formats, and their random stand-ins.

Place in the data flow: ``audiotoken.evaluation`` gathers pictures, clips and frames -> these models embed them
(numpy out) -> the metrics. ``audiotoken-rt evaluate --models DIR`` reads, and ``make-random --eval`` writes, these
files with the field's own libraries (nothing here re-implements a model, nothing is downloaded):

| file in DIR                            | model (metrics)                  | read by                                     |
|----------------------------------------|----------------------------------|---------------------------------------------|
| ``ViT-B-32.pt``                        | OpenAI CLIP ViT-B/32 (AIS)       | open_clip ``load_openai_model``             |
| ``ViT-L-14.pt``                        | OpenAI CLIP ViT-L/14 (IIS, AIC)  | open_clip ``load_openai_model``             |
| ``Wav2CLIP.pt``                        | Wav2CLIP's audio encoder (AIS)   | wav2clip's ``ResNetExtractor``, as its      |
|                                        |                                  | ``get_model`` builds it                     |
| ``pt_inception-2015-12-05-6726825d.pth`` | FID Inception v3 (FID)         | pytorch-fid's ``InceptionV3`` (pool3, 2048) |

open_clip infers a CLIP's architecture from its weights (OpenAI's TorchScript archive or a state dict), so the
stand-ins are tiny CLIPs (``make-random --arch sd15 --eval``: the real ViT-B/32 and ViT-L/14 sizes); Wav2CLIP
(ResNet-18) and the FID Inception have fixed architectures, so theirs are full size with random weights (45 MB and
95 MB). pytorch-fid and wav2clip fetch their weights from a URL inside their loaders; they are handed the local file.

Two compatibility measures, each taken only when the plain import fails:
- torchvision (open_clip and pytorch-fid need it): PyPI's torchvision wheels are CUDA builds whose native operators
  cannot load beside a CPU-only torch, and their import then stops at registering a fake kernel for
  ``torchvision::nms``. ``import_torchvision`` defines the schemas of the two operators that import registers (no
  kernels) and imports again: the evaluation uses torchvision's transforms and Inception blocks, never its detection
  operators. (Such a torchvision must sit outside the environment's site-packages, on PYTHONPATH: transformers
  imports any torchvision it finds, before this module could help.)
- torchaudio (wav2clip's ResNet computes its spectrogram with ``torchaudio.transforms.Spectrogram``): torchaudio's
  native extension does not load beside torch 2.13, so while wav2clip's model modules are imported a stand-in module
  supplies ``Spectrogram`` with torchaudio's defaults (below): the same ``window`` buffer in the state dict, the same
  values (a test holds it to torchaudio's own transform).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from audiotoken.checkpoints import read_torch_file
from audiotoken.evaluation import WAV2CLIP_RATE, WAV2CLIP_SAMPLES
from runtime.atomic import building_folder
from runtime.errors import CheckpointError, ConfigError, first_line


@dataclass(frozen=True)
class ModelFile:
    """One model file of ``--models DIR``: its name there, what it is, and where it is published."""

    name: str
    what: str
    source: str


MODEL_FILES = {  # the sources are the libraries' own download addresses (a test checks them against the libraries)
    "clip_b32": ModelFile(
        "ViT-B-32.pt",
        "OpenAI CLIP ViT-B/32 (AIS)",
        "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"
        " (or open_clip_pytorch_model.bin of huggingface.co/timm/vit_base_patch32_clip_224.openai, under this name)",
    ),
    "clip_l14": ModelFile(
        "ViT-L-14.pt",
        "OpenAI CLIP ViT-L/14 (IIS, AIC)",
        "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"
        " (or open_clip_pytorch_model.bin of huggingface.co/timm/vit_large_patch14_clip_224.openai, under this name)",
    ),
    "wav2clip": ModelFile(
        "Wav2CLIP.pt",
        "the Wav2CLIP checkpoint (AIS)",
        "https://github.com/descriptinc/lyrebird-wav2clip/releases/download/v0.1.0-alpha/Wav2CLIP.pt",
    ),
    "inception": ModelFile(
        "pt_inception-2015-12-05-6726825d.pth",
        "pytorch-fid's FID Inception weights (FID)",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    ),
}
MODELS_OF_METRIC = {"AIS": ("clip_b32", "wav2clip"), "IIS": ("clip_l14",), "AIC": ("clip_l14",), "FID": ("inception",)}
EVAL_HINT = (
    "pip install 'audiotoken-rt[eval]' && pip install --no-deps open-clip-torch==3.3.0 pytorch-fid==0.3.0 "
    "wav2clip==0.1.0, with the torchvision made for your torch (README: Evaluate)"
)
TORCHVISION_HINT = (
    "pip install the torchvision made for your torch (torch 2.13: torchvision==0.28.0); beside a CPU-only torch, "
    "install it aside (pip install --no-deps --target DIR torchvision==0.28.0) and run with PYTHONPATH=DIR"
)


def models_for(metrics) -> tuple[str, ...]:
    """The model files the metrics need, in MODEL_FILES order."""
    needed = {key for metric in metrics for key in MODELS_OF_METRIC[metric]}
    return tuple(key for key in MODEL_FILES if key in needed)


def model_path(folder: Path, key: str) -> Path:
    """``folder/<file>`` of model ``key``; a missing one is a one-line error naming it and where it is published, a
    ``folder`` that is a file one saying so."""
    spec = MODEL_FILES[key]
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ConfigError(
            f"--models {folder}: is not a folder",
            hint="pass the folder that holds the evaluation models (README: Evaluate lists them)",
        )
    path = Path(folder) / spec.name
    if not path.is_file():
        raise ConfigError(
            f"{path}: {spec.what} not found",
            hint=f"download {spec.source} into {folder} (nothing is downloaded at run time)",
        )
    return path


# ---- libraries ------------------------------------------------------------------------------------------------------

TORCHVISION_OPERATORS = (  # the operators torchvision's import registers fake kernels for, whatever _C holds
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_torchvision_schemas: list[torch.library.Library] = []  # kept alive: a Library unregisters its ops when collected


def forget_modules(package: str) -> None:
    """Drop ``package`` and its submodules from ``sys.modules`` (after a half-done import)."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


def import_torchvision() -> types.ModuleType:
    """torchvision, imported; when its native operators did not load (a CUDA build beside a CPU torch), with the
    schemas its import needs defined first (module docstring)."""
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError as exc:
        raise ConfigError("the evaluation needs torchvision, which is not installed", hint=TORCHVISION_HINT) from exc
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    forget_modules("torchvision")
    if not _torchvision_schemas:
        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in TORCHVISION_OPERATORS:
            library.define(schema)
        _torchvision_schemas.append(library)
    return importlib.import_module("torchvision")


def import_library(name: str) -> types.ModuleType:
    """open_clip or pytorch_fid.inception (both need torchvision first); missing -> one line naming the install."""
    import_torchvision()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the evaluation needs {exc.name}, which is not installed", hint=EVAL_HINT) from exc


class Spectrogram(nn.Module):
    """``torchaudio.transforms.Spectrogram`` with its defaults (win_length = n_fft, hop = win_length // 2, periodic
    Hann window as the ``window`` buffer, centred with reflected padding, not normalised, power 2) for wav2clip."""

    def __init__(self, n_fft: int = 400, win_length: int | None = None, hop_length: int | None = None):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.register_buffer("window", torch.hann_window(self.win_length))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape  # [..., T]
        spectrum = torch.stft(
            waveform.reshape(-1, shape[-1]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # [B, n_fft // 2 + 1, frames]
        return spectrum.abs().pow(2.0).reshape(*shape[:-1], *spectrum.shape[-2:])  # [..., n_fft // 2 + 1, frames]


def import_wav2clip() -> types.ModuleType:
    """``wav2clip.model.encoder``; where torchaudio cannot be imported, with ``Spectrogram`` standing in for it while
    wav2clip's modules load (module docstring)."""
    try:
        return importlib.import_module("wav2clip.model.encoder")
    except ModuleNotFoundError as exc:
        if exc.name != "torchaudio":
            raise ConfigError(f"the evaluation needs {exc.name}, which is not installed", hint=EVAL_HINT) from exc
    except OSError:  # torchaudio is there, but its native extension does not load
        pass
    forget_modules("wav2clip")
    forget_modules("torchaudio")
    stand_in = types.ModuleType("torchaudio")
    stand_in.transforms = types.SimpleNamespace(Spectrogram=Spectrogram)
    sys.modules["torchaudio"] = stand_in
    try:
        return importlib.import_module("wav2clip.model.encoder")
    finally:
        del sys.modules["torchaudio"]  # wav2clip's modules keep their reference; nobody else sees it


@contextmanager
def fid_inception_weights(path: Path | None) -> Iterator[None]:
    """While open, pytorch-fid builds its FID Inception with the weights of ``path`` (None: its random initial
    weights, for a stand-in) instead of downloading them."""
    inception = import_library("pytorch_fid.inception")
    built = []
    make = inception._inception_v3

    def remember(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    def local(url: str, **_) -> dict:
        if path is None:
            return built[-1].state_dict()
        return read_torch_file(path, MODEL_FILES["inception"].what, MODEL_FILES["inception"].source)

    with (
        mock.patch.object(inception, "_inception_v3", remember),
        mock.patch.object(inception, "load_state_dict_from_url", local),
    ):
        yield


# ---- the models -----------------------------------------------------------------------------------------------------


def checkpoint_error(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path}: does not load ({type(exc).__name__}: {first_line(exc)})",
        hint="is it the published file? (README: Evaluate lists them)",
    )


class ClipModel:
    """An OpenAI CLIP through open_clip: pictures and class names -> unit-length embeddings [N, E] (numpy)."""

    def __init__(self, path: Path, device: str):
        open_clip = import_library("open_clip")
        try:
            self.model = open_clip.load_openai_model(str(path), precision="fp32", device=device).eval()
        except Exception as exc:  # torch.jit / torch.load / open_clip raise many types for a foreign file
            raise checkpoint_error(path, exc) from exc
        self.preprocess = open_clip.image_transform(
            self.model.visual.image_size,
            is_train=False,
            mean=open_clip.OPENAI_DATASET_MEAN,
            std=open_clip.OPENAI_DATASET_STD,
        )
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.model.context_length)
        self.classifier = open_clip.build_zero_shot_classifier
        self.device = device

    @torch.inference_mode()
    def embed_images(self, images: list) -> np.ndarray:
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device)  # [B, 3, S, S]
        return self.model.encode_image(batch, normalize=True).float().cpu().numpy()  # [B, E]

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """open_clip's zero-shot classifier over bare class names (one template, "{}"): [C, E]."""
        weights = self.classifier(self.model, self.tokenizer, texts, ("{}",), device=self.device)  # [E, C]
        return weights.T.float().cpu().numpy()  # [C, E]


class Wav2ClipModel:
    """The wav2clip package's audio encoder with its released checkpoint, built as ``wav2clip.get_model`` builds it
    (``scenario="frozen"``, ``transform=True``): waveforms [B, T] (``wav2clip_audio``) -> embeddings [B, 512]."""

    def __init__(self, path: Path, device: str):
        encoder = import_wav2clip()
        checkpoint = read_torch_file(path, MODEL_FILES["wav2clip"].what, MODEL_FILES["wav2clip"].source)
        try:
            self.model = encoder.ResNetExtractor(checkpoint=checkpoint, scenario="frozen", transform=True)
        except Exception as exc:  # a strict load_state_dict over the file's audio_encoder.* / audio_transform.* keys
            raise checkpoint_error(path, exc) from exc
        self.model.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(waveforms, dtype=np.float32)).to(self.device)  # [B, T]
        return self.model(batch).float().cpu().numpy()  # [B, 512]


class InceptionModel:
    """pytorch-fid's FID Inception (block 3: pool3 features), fed as pytorch-fid feeds it: each picture as a [0, 1]
    tensor at its own size, resized to 299x299 bilinearly inside the network -> features [N, 2048]."""

    def __init__(self, path: Path, device: str):
        inception = import_library("pytorch_fid.inception")
        self.to_tensor = import_torchvision().transforms.functional.to_tensor
        try:
            with fid_inception_weights(path):
                self.model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        except CheckpointError:
            raise
        except Exception as exc:  # a strict load_state_dict of the file into the FID Inception
            raise checkpoint_error(path, exc) from exc
        self.model.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def embed_images(self, images: list) -> np.ndarray:
        features = np.zeros((len(images), 2048))
        sizes: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):  # one batch per picture size (frames and pictures may differ)
            sizes.setdefault(image.size, []).append(i)
        for indices in sizes.values():
            batch = torch.stack([self.to_tensor(images[i]) for i in indices]).to(self.device)  # [B, 3, H, W] in [0, 1]
            (pooled,) = self.model(batch)  # [B, 2048, 1, 1]
            features[indices] = pooled[:, :, 0, 0].double().cpu().numpy()  # [B, 2048]
        return features


LOADERS = {"clip_b32": ClipModel, "clip_l14": ClipModel, "wav2clip": Wav2ClipModel, "inception": InceptionModel}


def wav2clip_audio(path: Path, rate: int = WAV2CLIP_RATE) -> np.ndarray:
    """A clip as Wav2CLIP hears it: by default as SonicDiffusion's script feeds it (SPEC 7), librosa at 44.1 kHz
    mono, zero-padded (or cut) to 442,763 samples; at ``rate`` 16000, Wav2CLIP's own training input, 160,000 samples
    (10 s) -> [T] float32."""
    import librosa

    samples = WAV2CLIP_SAMPLES[rate]
    wave, _ = librosa.load(str(path), sr=rate, mono=True, dtype=np.float32)  # [T']
    if len(wave) == 0:
        raise ValueError("the clip holds no samples")
    return np.pad(wave[:samples], (0, max(0, samples - len(wave))))  # [T]


# ---- random stand-ins (make-random --eval) --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSize:
    """A CLIP's sizes, as open_clip's ``build_model_from_openai_state_dict`` reads them back from the weights
    (heads = width // 64, so widths are multiples of 64)."""

    embed_dim: int
    vision_width: int
    vision_layers: int
    patch_size: int
    image_size: int
    text_width: int
    text_layers: int


CLIP_SIZES = {
    "tiny": {
        "clip_b32": ClipSize(512, 64, 2, 8, 32, 64, 2),  # 512: Wav2CLIP embeds into ViT-B/32's space
        "clip_l14": ClipSize(48, 64, 2, 7, 28, 64, 2),
    },
    "sd15": {  # the real ViT-B/32 and ViT-L/14 sizes, for benchmarks
        "clip_b32": ClipSize(512, 768, 12, 32, 224, 512, 12),
        "clip_l14": ClipSize(768, 1024, 24, 14, 224, 768, 12),
    },
}


def random_clip_state(size: ClipSize) -> dict[str, torch.Tensor]:
    """An open_clip CLIP of ``size`` with random weights, as an OpenAI-layout state dict (fp16 where OpenAI's is)."""
    open_clip = import_library("open_clip")
    model = open_clip.CLIP(
        size.embed_dim,
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=size.vision_layers, width=size.vision_width, patch_size=size.patch_size, image_size=size.image_size
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=77,
            vocab_size=49408,
            width=size.text_width,
            heads=size.text_width // 64,
            layers=size.text_layers,
        ),
        quick_gelu=True,
    )
    open_clip.model.convert_weights_to_fp16(model)
    return model.state_dict()


def random_wav2clip_state() -> dict[str, torch.Tensor]:
    """wav2clip's ResNet and projection with random weights, keyed as its released checkpoint (``audio_encoder.*``,
    ``audio_transform.*``: what ``ResNetExtractor`` reads)."""
    encoder = import_wav2clip()
    resnet = encoder.ResNetExtractor(scenario="supervise").encoder
    transform = encoder.MLPLayers(units=[512, 512, 512], dropout=0.1)
    return {
        **{f"audio_encoder.{k}": v for k, v in resnet.state_dict().items()},
        **{f"audio_transform.{k}": v for k, v in transform.state_dict().items()},
    }


def random_inception_state() -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception with random weights, as its weights file holds them; the convolutions He-initialised
    (torch's default would shrink the features to ~1e-8 over its 94 layers)."""
    inception = import_library("pytorch_fid.inception")
    with fid_inception_weights(None):
        model = inception.fid_inception_v3()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.state_dict()


def write_random_eval_models(out: str | Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Write the four files of MODEL_FILES under ``out`` (atomically) with random weights, in the published formats."""
    if arch not in CLIP_SIZES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(CLIP_SIZES)}")
    out = Path(out)
    with building_folder(out) as staging:
        for key, size in CLIP_SIZES[arch].items():
            torch.manual_seed(seed)
            torch.save(random_clip_state(size), staging / MODEL_FILES[key].name)
        torch.manual_seed(seed)
        torch.save(random_wav2clip_state(), staging / MODEL_FILES["wav2clip"].name)
        torch.manual_seed(seed)
        torch.save(random_inception_state(), staging / MODEL_FILES["inception"].name)
    return out
