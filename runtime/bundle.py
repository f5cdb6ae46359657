"""Engine bundles: the manifest schema, reading and writing ``manifest.json``, and checking files against it.

Place in the data flow (docs/architecture.md): ``export`` builds ``engines/<name>/`` and writes its manifest with
``write_manifest``; the runtime opens it with ``Bundle.open``, which refuses a bundle whose files are missing,
whose sha256 differ from the manifest, whose ONNX files read external data from anywhere but the data file the
manifest lists (``runtime.external_data``), or whose engines' I/O is off the engine contract
(``runtime.contract``); the backends then reach every file through ``Bundle.file_path``; and ``audiotoken-rt info``
prints it. Torch-free: json and hashlib.

A bundle may come from anyone (docs/bundles.md), so the manifest is input: ``Field``, the one reader of its JSON,
holds every field to its JSON type and range (sizes positive and bounded, names from their known sets, numbers
finite, strings without control characters); every path in it must pass ``bundle_path`` (relative, '/'-separated,
no '..', and inside the bundle once symlinks are resolved), every sha256 and the key must be 64 lowercase hex
digits; anything else is refused in one line naming the field path and the value. The scheduler config is
diffusers' own, typed by ``runtime.schedulers.resolve_config`` for the recipe's scheduler (a key it reads off its
type or range is refused, as ``scheduler_config.<key>``); the recipe's sampling (``runtime.sampling.Sampling``, read
by its own ``from_json``) must hold the options' bounds, its steps within that scheduler's most at the recipe's
timestep spacing, and ``prediction_type`` must be the config's. The sha256 check finds corruption, not tampering
(whoever writes a file can write its manifest line too), and ``Bundle.open`` trusts a file whose size and mtime are
those it last hashed, unless asked to hash everything (``AUDIOTOKEN_RT_VERIFY=full``,
``audiotoken-rt info --verify full``).

The manifest is the single description of a bundle: schema version, the export key, sources with the sha256
of each file, D, the placeholder and its id, the prompt template, image size, VAE scaling factor, prediction
type, scheduler config, the other files (tokenizer, scheduler config), and per engine its ONNX file (plus
external data past 2 GB), I/O (name, dtype, shape), precision, the parity error measured at export and
the TensorRT plans built for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from runtime.atomic import write_atomically
from runtime.contract import (
    DYNAMIC,
    ENGINE_NAMES,
    GUIDED_BATCH,
    TOKEN_SLOTS,
    UNET_BATCHES,
    VAE_FACTOR,
    Dims,
    TensorSpec,
    contract_problems,
)
from runtime.errors import BundleError, ConfigError, first_line, shown
from runtime.external_data import MalformedProtobuf, external_locations
from runtime.sampling import DEFAULT, DEFAULT_PRESET, FAST, PRESETS, Preset, Sampling
from runtime.schedulers import PREDICTION_TYPES, resolve_config

# 2 added the recipe (fused LoRA, decoder, UNet batches, recommended sampling); 3 token slots; 4 recipe.eta and
# recipe.timestep_spacing; 5 recipe.preset (the distillation preset of the fused LoRA) and the LoRA's source role lora
SCHEMA_VERSION = 5
# version 1 reads as the recipe every bundle had then (Recipe()); 1-2 as one slot; 1-3 with eta 0 and the config's
# timestep spacing; 1-4 with a fused LoRA as the lcm preset's (the only one then), its source role lcm_lora as lora
READABLE_VERSIONS = (1, 2, 3, 4, 5)
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is some tens of kB; a bigger file is not read
_CHUNK = 1 << 20  # 1 MiB reads keep hashing a 3.4 GB UNet at a flat memory cost
SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # a sha256 and the bundle key, as the manifest writes them
MAX_PATH_BYTES = 4095  # a manifest path in UTF-8 (Linux's PATH_MAX less the NUL)
MAX_PART_BYTES = 255  # one part of it (NAME_MAX)
VERIFY_MODES = ("quick", "full")  # quick: a file of unchanged size and mtime is not hashed again; full: hash every file
VERIFY_VARIABLE = "AUDIOTOKEN_RT_VERIFY"  # how every command that opens a bundle is told to hash everything
UNTRUSTED_HINT = "get the bundle again from a publisher you trust, or rebuild it with audiotoken-rt export --force"
REBUILD_HINT = "rebuild the bundle with audiotoken-rt export --force"
# What the manifest's fields may hold (the C++ runtime's manifest.hpp mirrors the two bounds)
PRECISIONS = ("fp32", "fp16", "int8")  # of the bundle and of each engine (an int8 bundle keeps some engines fp32)
DECODERS = ("sd-vae", "taesd")  # Stable Diffusion's autoencoder, the tiny one (TAESD)
UNET_SOURCE = "unet"  # the source role of a UNet given in place of the SD's own (export --unet)
LORA_SOURCE = "lora"  # the source role of the LoRA fused into the UNet (export --lora)
OLD_LORA_SOURCE = "lcm_lora"  # its role before schema 5
MAX_PICTURE_SIDE = 4096  # pixels: a bundle's height and width (SD 1.x draws 512, SD 2.x 768)
MAX_TOKEN_DIM = 8192  # D: CLIP ViT-L is 768, OpenCLIP ViT-H 1024, ViT-bigG 1280
FLOAT32_NORMAL = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))  # vae_scaling_factor's range
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # controls, line breaks, surrogates


def path_problem(value: object) -> str | None:
    """What makes ``value`` not a manifest path (see ``bundle_path``), or None."""
    if not isinstance(value, str):
        return "it is not a string"
    if not value:
        return "it is empty"
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return "it holds a control character"
    if "\\" in value:
        return "it holds a backslash"
    if value.startswith("/"):
        return "it is absolute"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not UTF-8"
    if size > MAX_PATH_BYTES:
        return f"it is longer than {MAX_PATH_BYTES} bytes"
    for part in value.split("/"):
        if part in ("", ".", ".."):
            return f"it has a {part!r} part"
        if len(part.encode("utf-8")) > MAX_PART_BYTES:
            return f"a part is longer than {MAX_PART_BYTES} bytes"
    return None


def bundle_path(name: str, value: object, root: str | os.PathLike | None = None) -> Path:
    """The one rule for a path a manifest names (the C++ runtime's manifest.cpp mirrors it), refused in one line
    naming the manifest field ``name`` and the value.

    Spelling (checked when the manifest is read): a string of plain names joined by single '/' -- not empty, not
    absolute, no part empty, '.' or '..', no backslash, no control character (NUL included, U+0000-U+001F and U+007F),
    UTF-8 of at most 4095 bytes and 255 a part.
    Place (with ``root``, checked again each time the file is about to be read, since a symlink can be changed):
    ``root / value`` with every symlink resolved must lie inside ``root`` resolved. A symlink whose target stays
    inside the bundle is fine (the file it reaches is hash-checked like any other). Returns the path under the
    resolved ``root`` (the value itself, relative, without one).
    """
    if problem := path_problem(value):
        raise BundleError(
            f"{name} is {shown(value)}: {problem}; expected a relative '/'-separated path inside the bundle",
            hint=UNTRUSTED_HINT,
        )
    relative = str(value)  # a str: path_problem said so
    if root is None:
        return Path(relative)
    base = Path(root).resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise BundleError(f"{name} is {shown(value)}: it cannot be resolved ({exc})", hint=UNTRUSTED_HINT) from exc
    if not target.is_relative_to(base):
        raise BundleError(
            f"{name} is {shown(value)}: through a symlink it leads to {target}, outside the bundle {base}",
            hint=UNTRUSTED_HINT,
        )
    return base / relative


def sha256_hex(name: str, value: object) -> str:
    """``value`` if it is a sha256 as the manifest writes it (64 lowercase hex digits), else a one-line BundleError."""
    if not (isinstance(value, str) and SHA256_HEX.fullmatch(value)):
        raise BundleError(f"{name} is {shown(value)}: expected 64 lowercase hex digits (a sha256)", hint=UNTRUSTED_HINT)
    return value


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Field:
    """A value of the manifest's JSON and its field path (``engines.unet.inputs[0].shape[1]``): the one reader of
    the manifest's types. Each accessor returns the value if it has the JSON type (and lies in the range) the schema
    gives it, else raises one BundleError line naming the field path and the value. Keys the schema does not name
    are ignored (a newer export may add some within a schema version); a missing one is refused."""

    value: object
    name: str = ""  # the field path; "" for the whole manifest

    def refuse(self, expected: str) -> NoReturn:
        raise BundleError(f"{self.name} is {shown(self.value)}: expected {expected}", hint=REBUILD_HINT)

    def json_object(self) -> dict:
        """The JSON object itself (as json gives it: a free-form one, such as the scheduler config)."""
        if not isinstance(self.value, dict):
            self.refuse("an object")
        return self.value

    def __getitem__(self, key: str) -> Field:
        """The member ``key`` of this object."""
        members = self.json_object()
        if key not in members:
            raise BundleError(f"{member_name(self.name, key)} is missing", hint=REBUILD_HINT)
        return Field(members[key], member_name(self.name, key))

    def get(self, key: str, default: object) -> Field:
        """The member ``key`` of this object, ``default`` where it has none."""
        return Field(self.json_object().get(key, default), member_name(self.name, key))

    def members(self) -> dict[str, Field]:
        """Every member of this object, by key (a key holding a control character is refused)."""
        for key in self.json_object():
            if _UNPRINTABLE.search(key):
                raise BundleError(
                    f"{self.name} has the key {shown(key)}: expected keys without control characters",
                    hint=REBUILD_HINT,
                )
        return {key: Field(value, member_name(self.name, key)) for key, value in self.json_object().items()}

    def items(self) -> list[Field]:
        """Every item of this array."""
        if not isinstance(self.value, list):
            self.refuse("an array")
        return [Field(value, f"{self.name}[{i}]") for i, value in enumerate(self.value)]

    def optional(self) -> Field | None:
        """None where the value is null, else this field."""
        return None if self.value is None else self

    def text(self, choices: tuple[str, ...] = ()) -> str:
        """A string (one of ``choices`` when given) without control characters, line breaks or lone surrogates."""
        value = self.value
        if not isinstance(value, str) or _UNPRINTABLE.search(value) or (choices and value not in choices):
            if not choices:
                self.refuse("a string without control characters")
            self.refuse(repr(choices[0]) if len(choices) == 1 else f"one of {', '.join(choices)}")
        return value

    def whole(self, low: int, high: int | None = None, *, multiple: int = 1, dynamic: bool = False) -> int:
        """A JSON integer from ``low`` to ``high`` (no bound: None), a multiple of ``multiple``; or, when ``dynamic``,
        DYNAMIC (an open dimension)."""
        value = self.value
        in_range = type(value) is int and low <= value and (high is None or value <= high) and value % multiple == 0
        if not (in_range or (dynamic and type(value) is int and value == DYNAMIC)):
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            self.refuse(
                f"a whole number {span}"
                + (f", a multiple of {multiple}" if multiple > 1 else "")
                + (f", or {DYNAMIC} (an open dimension)" if dynamic else "")
            )
        return value

    def number(
        self, low: float = -math.inf, high: float = math.inf, *, above: bool = False, infinite: bool = False
    ) -> float:
        """A JSON number (an integer too) at least ``low`` (more than it, when ``above``) and at most ``high``,
        finite unless ``infinite`` (then Infinity passes too; NaN never does)."""
        value = self.value
        fits_float = type(value) is float or (type(value) is int and abs(value) <= sys.float_info.max)
        number = float(value) if fits_float else math.nan
        in_range = (low < number if above else low <= number) and number <= high
        if not (in_range and (infinite or math.isfinite(number))):
            bound = f" {'>' if above else '>='} {low:g}" if low > -math.inf else ""
            if high < math.inf:
                bound = f" from {low:g} to {high:g}"
            self.refuse(f"a {'' if infinite else 'finite '}number{bound}")
        return number

    def path(self) -> str:
        """A path inside the bundle, spelled by the rule (``bundle_path``)."""
        bundle_path(self.name, self.value)
        return self.value

    def sha256(self) -> str:
        """A sha256 as the manifest writes it (``sha256_hex``)."""
        return sha256_hex(self.name, self.value)


def member_name(name: str, key: str) -> str:
    """The field path of member ``key`` of the object at ``name``: ``engines.unet``, or ``files['a/b.json']`` (a key
    that is not a plain identifier, quoted as a message shows a value)."""
    if key.isascii() and key.isidentifier():
        return f"{name}.{key}" if name else key
    return f"{name}[{shown(key)}]"


def tensor_spec(d: Field) -> TensorSpec:
    """An engine input or output as the manifest writes it: name, numpy dtype name and shape (sizes >= 1, or DYNAMIC)."""
    return TensorSpec(
        d["name"].text(), d["dtype"].text(), tuple(size.whole(1, dynamic=True) for size in d["shape"].items())
    )


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

    @classmethod
    def from_json(cls, d: Field) -> FileEntry:
        """The entry at manifest field ``d``: its path spelled by the rule, its sha256 and size (bytes) well-formed."""
        return cls(d["path"].path(), d["sha256"].sha256(), d["size"].whole(0))


@dataclass(frozen=True)
class OutputError:
    """Parity of one output: max |engine - reference| and that over max |reference| (the reference: PyTorch at
    export; the CPU engine in ``audiotoken-rt doctor``)."""

    name: str
    max_abs: float
    max_rel: float

    @classmethod
    def measure(cls, name: str, engine: np.ndarray, reference: np.ndarray) -> OutputError:
        """Max abs and relative error; a non-finite engine output (or reference) counts as an infinite error, so
        the manifest never records NaN (its reader refuses it)."""
        if not (np.all(np.isfinite(engine)) and np.all(np.isfinite(reference))):
            return cls(name, float("inf"), float("inf"))
        max_abs = float(np.max(np.abs(engine.astype(np.float64) - reference)))
        scale = float(np.max(np.abs(reference)))
        return cls(name, max_abs, max_abs / scale if scale > 0 else max_abs)

    @classmethod
    def from_json(cls, d: Field) -> OutputError:
        return cls(d["name"].text(), d["max_abs"].number(0, infinite=True), d["max_rel"].number(0, infinite=True))


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
    def from_json(cls, d: Field) -> Parity:
        outputs = tuple(OutputError.from_json(o) for o in d["outputs"].items())
        return cls(d["backend"].text(), d["sample"].text(), d["tolerance"].number(0), outputs)


@dataclass(frozen=True)
class Plan:
    """A TensorRT plan of an engine, valid only for this TensorRT version and GPU."""

    file: FileEntry
    tensorrt_version: str
    gpu: str
    parity: Parity

    @classmethod
    def from_json(cls, d: Field) -> Plan:
        file = FileEntry.from_json(d["file"])
        return cls(file, d["tensorrt_version"].text(), d["gpu"].text(), Parity.from_json(d["parity"]))


@dataclass(frozen=True)
class Variant:
    """Another graph of an engine over the same weights file, for some devices only: the UNet with each attention
    fused into one ONNX Runtime ``MultiHeadAttention`` node, for ONNX Runtime's CPU and CUDA providers."""

    file: FileEntry
    devices: tuple[str, ...]
    parity: Parity

    @classmethod
    def from_json(cls, d: Field) -> Variant:
        devices = tuple(device.text() for device in d["devices"].items())
        return cls(FileEntry.from_json(d["file"]), devices, Parity.from_json(d["parity"]))


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

    def named_files(self, name: str) -> list[tuple[str, FileEntry]]:
        """Every file of the engine with its manifest field, the engine being at field ``name``."""
        return [
            (f"{name}.file", self.file),
            *([(f"{name}.data", self.data)] if self.data else []),
            *((f"{name}.plans[{i}].file", p.file) for i, p in enumerate(self.plans)),
            *((f"{name}.variants[{i}].file", v.file) for i, v in enumerate(self.variants)),
        ]

    def graphs(self) -> list[FileEntry]:
        """The engine's ONNX files: its own graph and its variants' (all over its one data file)."""
        return [self.file, *(v.file for v in self.variants)]

    def graph_for(self, device: str) -> FileEntry:
        """The ONNX file to run on ``device``: a variant made for it, else the engine's own graph."""
        return next((v.file for v in self.variants if device in v.devices), self.file)

    @classmethod
    def from_json(cls, d: Field, key: str) -> Engine:
        """The engine at manifest field ``d`` (``engines.<key>``, its ``name`` being ``key``)."""
        data = d["data"].optional()
        return cls(
            name=d["name"].text((key,)),
            file=FileEntry.from_json(d["file"]),
            data=FileEntry.from_json(data) if data is not None else None,
            precision=d["precision"].text(PRECISIONS),
            inputs=tuple(tensor_spec(t) for t in d["inputs"].items()),
            outputs=tuple(tensor_spec(t) for t in d["outputs"].items()),
            parity=Parity.from_json(d["parity"]),
            plans=tuple(Plan.from_json(p) for p in d["plans"].items()),
            variants=tuple(Variant.from_json(v) for v in d.get("variants", []).items()),
        )


@dataclass(frozen=True)
class Source:
    """An input of the export: ``role`` (sd, beats, embedder; lora, tiny_vae, unet: a UNet in place of the SD's),
    ``ref`` as given (hub id or path), file hashes."""

    role: str
    ref: str
    files: dict[str, str]  # path relative to the source (or its file name) -> sha256

    @classmethod
    def from_json(cls, d: Field, version: int = SCHEMA_VERSION) -> Source:
        """The source at manifest field ``d`` of a manifest of schema ``version`` (before 5 the LoRA's role is
        lcm_lora, read as lora)."""
        files = {name: digest.sha256() for name, digest in d["files"].members().items()}
        role = d["role"].text()
        return cls(LORA_SOURCE if version < 5 and role == OLD_LORA_SOURCE else role, d["ref"].text(), files)


@dataclass(frozen=True)
class Lora:
    """A LoRA fused into the UNet's weights at export: its source as given, its weights' sha256, the scale."""

    source: str
    sha256: str
    scale: float

    @classmethod
    def from_json(cls, d: Field) -> Lora:
        return cls(d["source"].text(), d["sha256"].sha256(), d["scale"].number())


@dataclass(frozen=True)
class Recipe:
    """What a bundle holds for drawing, and how it is meant to draw (``sampling``: what ``generate`` does unless
    told otherwise). Its JSON (the manifest's ``recipe``) holds the sampling's fields beside the others."""

    unet_batches: tuple[int, ...] = (GUIDED_BATCH,)  # 2: guidance > 1; 1: guidance 1 only; (1, 2): both
    decoder: str = "sd-vae"  # sd-vae (Stable Diffusion's autoencoder) or taesd (the tiny one)
    lora: Lora | None = None
    sampling: Sampling = DEFAULT
    preset: str | None = None  # the distillation preset of the fused LoRA (runtime.sampling.PRESETS); None without

    def distillation(self) -> Preset | None:
        """The distillation preset of the fused LoRA; None without one."""
        return PRESETS[self.preset] if self.preset is not None else None

    def holds(self, preset: Preset) -> bool:
        """Whether the bundle holds what ``preset`` draws with: its LoRA fused, the tiny decoder where the preset has
        one, its UNet batches."""
        tiny = preset.tiny_vae is None or self.decoder == "taesd"
        fused = self.lora is not None and self.preset == preset.name
        return fused and tiny and set(preset.unet_batches) <= set(self.unet_batches)

    def fast_preset(self) -> Preset | None:
        """The distillation preset ``generate --fast`` draws this bundle with (its recipe being the bundle's): its
        LoRA's, where the bundle holds all it needs; else None."""
        preset = self.distillation()
        return preset if preset is not None and self.holds(preset) else None

    def require_fast(self, root: str | os.PathLike) -> Preset:
        """The bundle's ``fast_preset``; else one ConfigError line saying what ``--fast`` needs and a hint naming the
        export that makes it, its flags derived from the preset (the LoRA's, or the default one without a LoRA)."""
        preset = self.fast_preset()
        if preset is not None:
            return preset
        batches = ",".join(map(str, self.unet_batches))
        has = f"{'a LoRA' if self.lora else 'no LoRA'}, the {self.decoder} decoder, UNet batch {batches}"
        own = self.distillation()
        if own is None:
            raise ConfigError(
                f"{root}: --fast needs a bundle with {FAST.needs()} (or another distillation preset's); this one has "
                f"{has}",
                hint=f"export one with: audiotoken-rt export ... {FAST.export_flags} (or: just export-fast); another "
                "preset: add --preset NAME",
            )
        raise ConfigError(
            f"{root}: --fast needs a bundle with {own.needs()}; this one has {has}",
            hint=f"export one with: audiotoken-rt export ... {own.export_flags}",
        )

    def to_json(self) -> dict:
        """The manifest's ``recipe`` object: these fields, the sampling's among them (not nested)."""
        recipe = asdict(self)
        del recipe["sampling"]
        return {**recipe, **self.sampling.to_json()}

    @classmethod
    def from_json(cls, d: Field, version: int) -> Recipe:
        """The recipe at manifest field ``d`` of a manifest of schema ``version`` (2 or later)."""
        batches = tuple(batch.whole(min(UNET_BATCHES), max(UNET_BATCHES)) for batch in d["unet_batches"].items())
        if not batches or len(set(batches)) < len(batches):
            d["unet_batches"].refuse(", ".join(f"[{batch}]" for batch in UNET_BATCHES) + f" or {list(UNET_BATCHES)}")
        lora = d["lora"].optional()
        preset = DEFAULT_PRESET if lora is not None else None  # before schema 5, the lcm preset's LoRA
        if version >= 5:
            given = d["preset"].optional()
            preset = given.text(tuple(PRESETS)) if given is not None else None
            if (preset is None) != (lora is None):
                d["preset"].refuse("a preset's name with a LoRA, null without one")
        return cls(
            unet_batches=batches,
            decoder=d["decoder"].text(DECODERS),
            lora=Lora.from_json(lora) if lora is not None else None,
            sampling=Sampling.from_json(d, with_eta_and_spacing=version >= 4),
            preset=preset,
        )


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

    def named_files(self) -> list[tuple[str, FileEntry]]:
        """Every file of the bundle with the manifest field that names it (``files[0]``, ``engines.unet.data``...)."""
        return [
            *((f"files[{i}]", f) for i, f in enumerate(self.files)),
            *(named for name, engine in self.engines.items() for named in engine.named_files(f"engines.{name}")),
        ]

    def all_files(self) -> list[FileEntry]:
        return [entry for _, entry in self.named_files()]

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
        if LORA_SOURCE in refs and self.recipe.lora and self.recipe.preset:
            words += ["--lora", refs[LORA_SOURCE], "--preset", self.recipe.preset]
            words += ["--lora-scale", f"{self.recipe.lora.scale:g}"]
        if "tiny_vae" in refs:
            words += ["--tiny-vae", refs["tiny_vae"]]
        if UNET_SOURCE in refs:
            words += ["--unet", refs[UNET_SOURCE]]
        return shlex.join([*words, "--force"])

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "recipe": self.recipe.to_json()}, indent=2) + "\n"

    def check_schedule(self) -> None:
        """The recipe's scheduler built on ``scheduler_config`` (``runtime.schedulers``, the one place it is typed) at
        the recipe's timestep spacing: a config it cannot read, recipe steps beyond its most, or a
        ``prediction_type`` other than the one the scheduler uses is one BundleError line naming the field."""
        sampling = self.recipe.sampling
        try:
            config = resolve_config(sampling.scheduler, sampling.scheduler_config(self.scheduler_config))
            most = sampling.max_steps(self.scheduler_config)
        except ConfigError as exc:
            raise BundleError(str(exc), hint=REBUILD_HINT) from None
        if config["prediction_type"] != self.prediction_type:
            raise BundleError(
                f"prediction_type is {shown(self.prediction_type)}, scheduler_config.prediction_type "
                f"{shown(config['prediction_type'])} (what the schedulers use): expected the same",
                hint=REBUILD_HINT,
            )
        if sampling.steps > most:
            spacing = f" at {sampling.timestep_spacing} spacing" if sampling.timestep_spacing is not None else ""
            raise BundleError(
                f"recipe.steps is {sampling.steps}: expected a whole number from 1 to {most} (the most "
                f"{sampling.scheduler} takes on scheduler_config{spacing})",
                hint=REBUILD_HINT,
            )

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST) -> Manifest:
        """The manifest in ``text`` (read from ``source``, which every error names), each field checked by ``Field``."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError; an integer of 4300+ digits; deep nesting
            raise BundleError(f"{source}: not valid JSON ({first_line(exc)})", hint=REBUILD_HINT) from None
        version = document.get("schema_version") if isinstance(document, dict) else None
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise BundleError(
                f"{source}: manifest schema version {shown(version)}, this audiotoken-rt reads versions {', '.join(map(str, READABLE_VERSIONS))}",
                hint="rebuild the bundle with this version's audiotoken-rt export --force",
            )
        d = Field(document)
        try:
            manifest = cls(
                schema_version=version,
                key=d["key"].sha256(),
                sources=tuple(Source.from_json(s, version) for s in d["sources"].items()),
                precision=d["precision"].text(PRECISIONS),
                opset=d["opset"].whole(1),
                token_dim=d["token_dim"].whole(1, MAX_TOKEN_DIM),
                placeholder=d["placeholder"].text(),
                placeholder_id=d["placeholder_id"].whole(0),
                template=d["template"].text(),
                height=d["height"].whole(VAE_FACTOR, MAX_PICTURE_SIDE, multiple=VAE_FACTOR),
                width=d["width"].whole(VAE_FACTOR, MAX_PICTURE_SIDE, multiple=VAE_FACTOR),
                vae_scaling_factor=d["vae_scaling_factor"].number(*FLOAT32_NORMAL),  # 0 or Inf in float32: NaN
                prediction_type=d["prediction_type"].text(PREDICTION_TYPES),
                scheduler_config=d["scheduler_config"].json_object(),
                tokenizer=d["tokenizer"].path(),
                files=tuple(FileEntry.from_json(f) for f in d["files"].items()),
                engines={key: Engine.from_json(e, key) for key, e in d["engines"].members().items()},
                created_with={package: v.text() for package, v in d["created_with"].members().items()},
                recipe=Recipe.from_json(d["recipe"], version) if version >= 2 else Recipe(),
                token_slots=d["token_slots"].whole(1, TOKEN_SLOTS) if version >= 3 else 1,
            )
            manifest.check_schedule()
            return manifest
        except BundleError as exc:  # a field off the rules: the same line, said of this manifest
            raise BundleError(f"{source}: {exc}", hint=exc.hint) from None


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
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror})", hint=UNTRUSTED_HINT) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest", hint=UNTRUSTED_HINT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); export writes manifests in UTF-8",
            hint=REBUILD_HINT,
        ) from None
    return Manifest.from_json(text, str(path))


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (a reader sees the old one or the new one, never half a file)."""
    return write_atomically(Path(folder) / MANIFEST, manifest.to_json().encode())


def user_cache_dir() -> Path:
    """audiotoken-rt's per-user cache folder (verified hashes, TensorRT timing caches), under $XDG_CACHE_HOME."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audiotoken-rt"


def hash_cache_path(manifest: Manifest) -> Path:
    """Where the hashes already checked for this bundle are remembered (per user, outside the bundle)."""
    return user_cache_dir() / "verified" / f"{manifest.key}.json"


def verify_mode(mode: str | None = None) -> str:
    """How ``Bundle.open`` checks files: ``mode`` if given, else ``$AUDIOTOKEN_RT_VERIFY``, else quick."""
    chosen = mode or os.environ.get(VERIFY_VARIABLE) or "quick"
    if chosen not in VERIFY_MODES:
        said = f"--verify {chosen!r}" if mode else f"{VERIFY_VARIABLE}={chosen!r}"
        raise ConfigError(f"{said}: expected one of {', '.join(VERIFY_MODES)}", hint="full hashes every file")
    return chosen


def file_stamp(path: Path, entry: FileEntry) -> list:
    """What a check saw of a file: [its path with every symlink resolved, size, mtime in ns, the sha256 it was
    checked against] (the format of the hash cache the C++ runtime shares: its manifest.cpp stamps the
    ``weakly_canonical`` path, so both runtimes write the same stamp); an unchanged stamp needs no new hash in quick
    mode."""
    resolved = path.resolve()
    stat = resolved.stat()
    return [str(resolved), stat.st_size, stat.st_mtime_ns, entry.sha256]


def external_data_problem(folder: Path, engine: Engine, graph: FileEntry) -> str | None:
    """Why ONNX Runtime would read ``graph``'s weights from a file the manifest does not hash, or None.

    ONNX Runtime opens each tensor's external ``location`` relative to the ONNX file's folder; the only file an
    engine's graphs may name is the engine's data file, exactly as the manifest spells it (so no '..', no absolute
    path, no second spelling of the same file).
    """
    try:
        locations = set(external_locations(folder / graph.path))
    except MalformedProtobuf as exc:
        return f"{graph.path} is not an ONNX file ({exc})"
    allowed = engine.data.path if engine.data else None
    base = posixpath.dirname(graph.path)
    for location in sorted(locations):
        if (f"{base}/{location}" if base else location) != allowed:
            may_read = f"its data file {allowed}" if allowed else "no other file (the manifest lists no data file)"
            return (
                f"{graph.path} reads external data from {shown(location)}; an engine's ONNX files may read {may_read}"
            )
    return None


def check_files(folder: str | os.PathLike, trust_unchanged: bool) -> tuple[Manifest, dict[str, list]]:
    """``verify``'s work: the manifest, and the stamp of every file as this check saw it."""
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    bundle_path("tokenizer", manifest.tokenizer, folder)
    cache_path = hash_cache_path(manifest)
    try:
        checked = json.loads(cache_path.read_text()) if trust_unchanged else {}
    except (OSError, ValueError):
        checked = {}
    if not isinstance(checked, dict):
        checked = {}
    problems, seen = [], {}
    for name, entry in manifest.named_files():
        path = bundle_path(f"{name}.path", entry.path, folder)  # raises: a path leading outside is not a mismatch
        if not path.is_file():
            problems.append(f"{entry.path} is missing")
            continue
        stamp = file_stamp(path, entry)
        if checked.get(entry.path) != stamp and (actual := file_sha256(path)) != entry.sha256:
            problems.append(f"{entry.path} has sha256 {actual[:12]}..., the manifest says {entry.sha256[:12]}...")
        seen[entry.path] = stamp
    missing = [name for name in ENGINE_NAMES if name not in manifest.engines]
    if missing:
        problems.append(f"engines {', '.join(missing)} are not in the manifest")
    for name, engine in manifest.engines.items():  # the I/O each engine was exported with must be this runtime's
        problems += contract_problems(name, engine.inputs, engine.outputs, manifest.dims)
    if problems:
        raise BundleError(
            f"bundle {folder}: {'; '.join(problems)}", hint=f"rebuild it: {manifest.rebuild_command(folder)}"
        )
    for engine in manifest.engines.values():
        for graph in engine.graphs():
            if problem := external_data_problem(folder, engine, graph):
                raise BundleError(f"bundle {folder}: {problem}", hint=UNTRUSTED_HINT)
    try:  # remember what was checked; a read-only home only costs the next start a re-hash
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(seen))
    except OSError:
        pass
    return manifest, seen


def verify(folder: str | os.PathLike, *, trust_unchanged: bool = False) -> Manifest:
    """Read the manifest and check every file it lists: inside the bundle, present, of its sha256 (BundleError
    names each that is not), and every ONNX file reading external data only from its engine's data file.

    With ``trust_unchanged`` (what ``Bundle.open`` does in quick mode), a file whose size and modification time are
    those of its last successful check is not hashed again: re-hashing a 3.4 GB UNet costs seconds at every start,
    on a Jetson tens of them. A file rewritten behind an unchanged size and mtime therefore passes; ``audiotoken-rt
    info`` (``--verify full``, its default), export and ``AUDIOTOKEN_RT_VERIFY=full`` hash everything.
    """
    return check_files(folder, trust_unchanged)[0]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its folder, manifest, and what the open-time check saw of each file."""

    root: Path
    manifest: Manifest
    stamps: dict[str, list] = field(default_factory=dict, compare=False)  # entry path -> file_stamp at open

    @classmethod
    def open(cls, folder: str | os.PathLike, verify: str | None = None) -> Bundle:
        """Open ``folder`` after checking every file against the manifest; ``verify`` (``VERIFY_MODES``, default
        ``$AUDIOTOKEN_RT_VERIFY`` or quick) says whether files unchanged since their last check are hashed again."""
        manifest, stamps = check_files(folder, trust_unchanged=verify_mode(verify) == "quick")
        return cls(Path(folder), manifest, stamps)

    def file_path(self, name: str, entry: FileEntry) -> Path:
        """The path of ``entry`` (manifest field ``name``) as it is about to be read: checked again to lie inside
        the bundle, and to be the file the open-time check saw (same size and mtime), else hashed again."""
        path = bundle_path(f"{name}.path", entry.path, self.root)
        try:
            stamp = file_stamp(path, entry)
        except OSError as exc:
            raise BundleError(
                f"{path}: gone since the bundle was opened ({exc.strerror})", hint=UNTRUSTED_HINT
            ) from exc
        if self.stamps.get(entry.path) != stamp and file_sha256(path) != entry.sha256:
            raise BundleError(
                f"{path}: changed since the bundle was opened (its sha256 is no longer the manifest's)",
                hint=f"open the bundle again; audiotoken-rt info --verify full {self.root} checks every file",
            )
        return path

    @property
    def tokenizer_dir(self) -> Path:
        """The tokenizer folder, checked again to lie inside the bundle (its files are in the manifest's files)."""
        return bundle_path("tokenizer", self.manifest.tokenizer, self.root)

    def engine_path(self, name: str, device: str = "cpu") -> Path:
        """The ONNX file of engine ``name`` to run on ``device`` (ONNX Runtime's): a variant made for it, if any;
        it and the data file it reads are checked by ``file_path`` first."""
        if name not in self.manifest.engines:
            raise BundleError(
                f"{self.root}: no engine {name!r} in the manifest (has {', '.join(self.manifest.engines)})",
                hint=f"rebuild it: {self.manifest.rebuild_command(self.root)}",
            )
        engine = self.manifest.engines[name]
        graph = engine.graph_for(device)
        named = engine.named_files(f"engines.{name}")
        if engine.data:
            self.file_path(f"engines.{name}.data", engine.data)
        return self.file_path(next(field_name for field_name, entry in named if entry is graph), graph)
