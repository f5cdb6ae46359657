"""Engine bundles: the manifest schema, reading and writing ``manifest.json``, and checking files against it.

Place in the data flow (DESIGN.md): ``export`` builds ``engines/<name>/`` and writes its manifest with
``write_manifest``; the runtime opens it with ``Bundle.open``, which refuses a bundle whose files are missing,
whose sha256 differ from the manifest, or whose engines' I/O is off the engine contract (``runtime.contract``),
and ``audiotoken-rt info`` prints it. Torch-free: json and hashlib.

The manifest is the single description of a bundle: schema version, the export key, sources with the sha256
of each file, D, the placeholder and its id, the prompt template, image size, VAE scaling factor, prediction
type, scheduler config, the other files (tokenizer, scheduler config), and per engine its ONNX file (plus
external data past 2 GB), I/O (name, dtype, shape), precision, the parity error measured at export and
the TensorRT plans built for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.atomic import write_atomically
from runtime.contract import ENGINE_NAMES, GUIDED_BATCH, Dims, TensorSpec, contract_problems
from runtime.errors import BundleError

SCHEMA_VERSION = 3  # 2 added the recipe (fused LoRA, decoder, UNet batches, recommended sampling); 3 token slots
READABLE_VERSIONS = (1, 2, 3)  # version 1 reads as the recipe every bundle had then (Recipe()); 1-2 as one slot
MANIFEST = "manifest.json"
_CHUNK = 1 << 20  # 1 MiB reads keep hashing a 3.4 GB UNet at a flat memory cost


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle, by path relative to the bundle folder."""

    path: str
    sha256: str
    size: int

    @classmethod
    def of(cls, root: Path, path: str) -> FileEntry:
        """Hash ``root / path`` now."""
        full = root / path
        return cls(path, file_sha256(full), full.stat().st_size)


@dataclass(frozen=True)
class OutputError:
    """Parity of one output: max |engine - reference| and that over max |reference| (the reference: PyTorch at
    export; the CPU engine in ``audiotoken-rt doctor``)."""

    name: str
    max_abs: float
    max_rel: float

    @classmethod
    def measure(cls, name: str, engine: np.ndarray, reference: np.ndarray) -> OutputError:
        """Max abs and relative error; a non-finite engine output counts as an infinite error."""
        if not np.all(np.isfinite(engine)):
            return cls(name, float("inf"), float("inf"))
        max_abs = float(np.max(np.abs(engine.astype(np.float64) - reference)))
        scale = float(np.max(np.abs(reference)))
        return cls(name, max_abs, max_abs / scale if scale > 0 else max_abs)


@dataclass(frozen=True)
class Parity:
    """How an engine (ONNX file or TensorRT plan) compared with PyTorch at export, on the network's sample."""

    backend: str
    sample: str
    tolerance: float  # on max_rel
    outputs: tuple[OutputError, ...]

    @property
    def ok(self) -> bool:
        return all(o.max_rel <= self.tolerance for o in self.outputs)

    @classmethod
    def from_json(cls, d: dict) -> Parity:
        return cls(d["backend"], d["sample"], d["tolerance"], tuple(OutputError(**o) for o in d["outputs"]))


@dataclass(frozen=True)
class Plan:
    """A TensorRT plan of an engine, valid only for this TensorRT version and GPU."""

    file: FileEntry
    tensorrt_version: str
    gpu: str
    parity: Parity

    @classmethod
    def from_json(cls, d: dict) -> Plan:
        return cls(FileEntry(**d["file"]), d["tensorrt_version"], d["gpu"], Parity.from_json(d["parity"]))


@dataclass(frozen=True)
class Variant:
    """Another graph of an engine over the same weights file, for some devices only: the UNet with each attention
    fused into one ONNX Runtime ``MultiHeadAttention`` node, for ONNX Runtime's CPU and CUDA providers."""

    file: FileEntry
    devices: tuple[str, ...]
    parity: Parity

    @classmethod
    def from_json(cls, d: dict) -> Variant:
        return cls(FileEntry(**d["file"]), tuple(d["devices"]), Parity.from_json(d["parity"]))


@dataclass(frozen=True)
class Engine:
    """One exported network: ONNX file (and external data), I/O contract, precision, parity, plans, and variants
    (other graphs over the same data file, for some devices)."""

    name: str
    file: FileEntry
    data: FileEntry | None
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parity: Parity
    plans: tuple[Plan, ...] = ()
    variants: tuple[Variant, ...] = ()

    def files(self) -> list[FileEntry]:
        return [
            self.file,
            *([self.data] if self.data else []),
            *(p.file for p in self.plans),
            *(v.file for v in self.variants),
        ]

    def graph_for(self, device: str) -> FileEntry:
        """The ONNX file to run on ``device``: a variant made for it, else the engine's own graph."""
        return next((v.file for v in self.variants if device in v.devices), self.file)

    @classmethod
    def from_json(cls, d: dict) -> Engine:
        return cls(
            name=d["name"],
            file=FileEntry(**d["file"]),
            data=FileEntry(**d["data"]) if d["data"] else None,
            precision=d["precision"],
            inputs=tuple(TensorSpec.from_json(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in d["outputs"]),
            parity=Parity.from_json(d["parity"]),
            plans=tuple(Plan.from_json(p) for p in d["plans"]),
            variants=tuple(Variant.from_json(v) for v in d.get("variants", ())),
        )


@dataclass(frozen=True)
class Source:
    """An input of the export: ``role`` (sd, beats, embedder), ``ref`` as given (hub id or path), file hashes."""

    role: str
    ref: str
    files: dict[str, str]  # path relative to the source (or its file name) -> sha256


@dataclass(frozen=True)
class Lora:
    """A LoRA fused into the UNet's weights at export: its source as given, its weights' sha256, the scale."""

    source: str
    sha256: str
    scale: float


@dataclass(frozen=True)
class Recipe:
    """What a bundle holds for drawing, and how it is meant to draw (what ``generate`` does unless told otherwise)."""

    unet_batches: tuple[int, ...] = (GUIDED_BATCH,)  # 2: guidance > 1; 1: guidance 1 only; (1, 2): both
    decoder: str = "sd-vae"  # sd-vae (Stable Diffusion's autoencoder) or taesd (the tiny one)
    lora: Lora | None = None
    scheduler: str = "dpm++2m"
    steps: int = 25
    guidance: float = 7.5

    @property
    def fast(self) -> bool:
        """Whether the bundle holds the fast recipe: LCM-LoRA fused, the tiny decoder, a UNet of batch 1."""
        return self.lora is not None and self.decoder == "taesd" and 1 in self.unet_batches

    @classmethod
    def from_json(cls, d: dict) -> Recipe:
        lora = Lora(**d["lora"]) if d["lora"] else None
        return cls(tuple(d["unet_batches"]), d["decoder"], lora, d["scheduler"], d["steps"], d["guidance"])


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about a bundle; ``key`` identifies what it was built from."""

    schema_version: int
    key: str
    sources: tuple[Source, ...]
    precision: str
    opset: int
    token_dim: int
    placeholder: str
    placeholder_id: int
    template: str
    height: int
    width: int
    vae_scaling_factor: float
    prediction_type: str
    scheduler_config: dict
    tokenizer: str  # folder holding tokenizer.json (for ``tokenizers``) and the source tokenizer files
    files: tuple[FileEntry, ...]  # everything but the engines: tokenizer files, scheduler_config.json
    engines: dict[str, Engine]
    created_with: dict[str, str]  # package versions of the export
    recipe: Recipe = Recipe()
    token_slots: int = 1  # sounds a prompt may hold (the text engine's token slots); 1 before schema 3

    @property
    def dims(self) -> Dims:
        """The sizes the engines' static shapes are made of (``runtime.contract``)."""
        return Dims(self.token_dim, self.height, self.width, self.recipe.unet_batches, self.token_slots)

    @property
    def bundle_id(self) -> str:
        """A short id of the bundle's content (its export key), recorded in the pictures it draws."""
        return self.key[:16]

    def all_files(self) -> list[FileEntry]:
        return [*self.files, *(f for engine in self.engines.values() for f in engine.files())]

    def rebuild_command(self, folder: str | os.PathLike) -> str:
        """The export command line that rebuilds this bundle in ``folder``."""
        refs = {s.role: s.ref for s in self.sources}
        words = [
            "audiotoken-rt",
            "export",
            "--sd",
            refs.get("sd", "?"),
            "--beats",
            refs.get("beats", "?"),
            "--embedder",
            refs.get("embedder", "?"),
            "--out",
            str(folder),
            "--height",
            str(self.height),
            "--width",
            str(self.width),
            "--precision",
            self.precision,
            "--template",
            self.template,
            "--unet-batch",
            ",".join(map(str, self.recipe.unet_batches)),
        ]
        if "lcm_lora" in refs and self.recipe.lora:
            words += ["--lcm-lora", refs["lcm_lora"], "--lora-scale", f"{self.recipe.lora.scale:g}"]
        if "tiny_vae" in refs:
            words += ["--tiny-vae", refs["tiny_vae"]]
        return shlex.join([*words, "--force"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST) -> Manifest:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(
                f"{source}: not valid JSON ({exc})", hint="rebuild the bundle with audiotoken-rt export --force"
            ) from exc
        version = d.get("schema_version") if isinstance(d, dict) else None
        if version not in READABLE_VERSIONS:
            raise BundleError(
                f"{source}: manifest schema version {version}, this audiotoken-rt reads versions {', '.join(map(str, READABLE_VERSIONS))}",
                hint="rebuild the bundle with this version's audiotoken-rt export --force",
            )
        try:
            return cls(
                **{
                    k: d[k]
                    for k in (
                        "key",
                        "precision",
                        "opset",
                        "token_dim",
                        "placeholder",
                        "placeholder_id",
                        "template",
                        "height",
                        "width",
                        "vae_scaling_factor",
                        "prediction_type",
                        "scheduler_config",
                        "tokenizer",
                        "created_with",
                        "schema_version",
                    )
                },
                sources=tuple(Source(**s) for s in d["sources"]),
                files=tuple(FileEntry(**f) for f in d["files"]),
                engines={name: Engine.from_json(e) for name, e in d["engines"].items()},
                recipe=Recipe.from_json(d["recipe"]) if version >= 2 else Recipe(),
                token_slots=d["token_slots"] if version >= 3 else 1,
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(
                f"{source}: manifest lacks or mistypes a field ({exc})",
                hint="rebuild the bundle with audiotoken-rt export --force",
            ) from exc


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """The manifest of the bundle in ``folder`` (not yet checked against the files)."""
    path = Path(folder) / MANIFEST
    if not Path(folder).exists():
        raise BundleError(
            f"{folder}: bundle folder does not exist",
            hint="check the path, or build one with audiotoken-rt export --out FOLDER",
        )
    if not path.is_file():
        raise BundleError(
            f"{folder}: no {MANIFEST}; expected an engine bundle folder",
            hint="build one with audiotoken-rt export --out FOLDER",
        )
    return Manifest.from_json(path.read_text(), str(path))


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (a reader sees the old one or the new one, never half a file)."""
    return write_atomically(Path(folder) / MANIFEST, manifest.to_json().encode())


def user_cache_dir() -> Path:
    """audiotoken-rt's per-user cache folder (verified hashes, TensorRT timing caches), under $XDG_CACHE_HOME."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audiotoken-rt"


def hash_cache_path(manifest: Manifest) -> Path:
    """Where the hashes already checked for this bundle are remembered (per user, outside the bundle)."""
    return user_cache_dir() / "verified" / f"{manifest.key}.json"


def verify(folder: str | os.PathLike, *, trust_unchanged: bool = False) -> Manifest:
    """Read the manifest and check every file it lists exists with its sha256; BundleError names each that does not.

    With ``trust_unchanged`` (what ``Bundle.open`` does), a file whose size and modification time are those of its
    last successful check is not hashed again: re-hashing a 3.4 GB UNet costs seconds at every start, on a Jetson
    tens of them. ``audiotoken-rt info`` and export always hash everything.
    """
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    cache_path = hash_cache_path(manifest)
    try:
        checked = json.loads(cache_path.read_text()) if trust_unchanged else {}
    except (OSError, ValueError):
        checked = {}
    problems, seen = [], {}
    for entry in manifest.all_files():
        path = folder / entry.path
        if not path.is_file():
            problems.append(f"{entry.path} is missing")
            continue
        stat = path.stat()
        stamp = [str(path), stat.st_size, stat.st_mtime_ns, entry.sha256]
        if checked.get(entry.path) != stamp and (actual := file_sha256(path)) != entry.sha256:
            problems.append(f"{entry.path} has sha256 {actual[:12]}..., the manifest says {entry.sha256[:12]}...")
        seen[entry.path] = stamp
    missing = [name for name in ENGINE_NAMES if name not in manifest.engines]
    if missing:
        problems.append(f"engines {', '.join(missing)} are not in the manifest")
    for (
        name,
        engine,
    ) in manifest.engines.items():  # the I/O each engine was exported with must be this runtime's contract
        problems += contract_problems(name, engine.inputs, engine.outputs, manifest.dims)
    if problems:
        raise BundleError(
            f"bundle {folder}: {'; '.join(problems)}", hint=f"rebuild it: {manifest.rebuild_command(folder)}"
        )
    try:  # remember what was checked; a read-only home only costs the next start a re-hash
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(seen))
    except OSError:
        pass
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its folder and manifest."""

    root: Path
    manifest: Manifest

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Bundle:
        """Open ``folder`` after checking every file against the manifest (unchanged files are not re-hashed)."""
        return cls(Path(folder), verify(folder, trust_unchanged=True))

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / self.manifest.tokenizer

    def engine_path(self, name: str, device: str = "cpu") -> Path:
        """The ONNX file of engine ``name`` to run on ``device`` (ONNX Runtime's): a variant made for it, if any."""
        if name not in self.manifest.engines:
            raise BundleError(
                f"{self.root}: no engine {name!r} in the manifest (has {', '.join(self.manifest.engines)})",
                hint=f"rebuild it: {self.manifest.rebuild_command(self.root)}",
            )
        return self.root / self.manifest.engines[name].graph_for(device).path
