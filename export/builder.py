"""Build an engine bundle: every network exported and validated in data order, idempotently and atomically.

Place in the data flow: ``audiotoken-rt export`` -> ``export_bundle`` -> ``engines/<name>/`` -> the runtime.
1. resolve and hash the sources (``export.sources``; a small UNet must take the SD's conditioning and a LoRA must
   fit the bundle's UNet, and a distillation preset's recipe must be one the runtime draws, all checked before any
   export work); the bundle key is a sha256 over the schema version,
   the sources' file hashes, the options that shape the engines (size, precision, template, opset), the package
   versions and the source of the exporter and the models it traces (``code_digest``), so a bundle exported by
   other code is not taken as up to date;
2. a bundle already at ``--out`` with the same key is verified and reused (``--tensorrt`` adds the plans this
   GPU lacks); a bundle with another key is rebuilt with ``--update``, and it or anything else there is an error
   unless ``--force``;
3. in a temporary sibling folder, per network (``export.networks``): build the wrapper module, take PyTorch's
   output on the sample, trace to ONNX (its traced form, where it has one), convert to fp16 for ``--precision
   fp16`` (or quantize the linear layers and convolutions of the UNet and of BEATs for ``--precision int8``),
   save and check, compare with ONNX Runtime, free the module; then the tokenizer, the scheduler config,
   TensorRT plans and the manifest;
4. the folder is built aside and renamed into place (``runtime.atomic.building_folder``), so an interrupted export
   leaves no half bundle behind; the next export removes what a killed one left.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import audiotoken
from export.attention import FUSED_DEVICES, fuse_attention
from export.fp16 import to_fp16
from export.int8 import to_calibrated_int8, to_int8
from export.networks import Network, describe_networks, read_dims
from export.onnx_file import OPSET, save_onnx, trace_to_onnx
from export.options import ExportOptions, parse_unet_batches
from export.parity import check_parity, measure_parity
from export.sources import Sources, resolve_sources
from export.tensorrt import build_plan, plan_file, require_tensorrt
from export.token_merging import check_merging, merge_tokens
from export.tokenizer import TOKENIZER_DIR, write_tokenizer
from runtime.atomic import building_folder, remove_stale_builds
from runtime.bundle import (
    PRECISIONS,
    SCHEMA_VERSION,
    Engine,
    FileEntry,
    Manifest,
    Parity,
    Recipe,
    Variant,
    read_manifest,
    verify,
    write_manifest,
)
from runtime.contract import GUIDED_BATCH, PLACEHOLDER, UNET, VAE_FACTOR, Dims
from runtime.errors import BundleError, ConfigError, ExportError
from runtime.sampling import DEFAULT, Preset
from runtime.tokenizer import check_template

TRACED_CODE = (Path(__file__).parent, Path(audiotoken.__file__).parent)  # the exporter and the models it traces

Sample = tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]  # (inputs, PyTorch outputs)


@dataclass(frozen=True)
class Exported:
    folder: Path
    manifest: Manifest
    reused: bool  # True: the bundle was already up to date


class Stages:
    """The export's progress: a rich bar over named stages, and one line per finished stage with its time."""

    def __init__(self, console: Console):
        self.console = console
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.progress = Progress(*columns, console=console, transient=True)
        self.task = self.progress.add_task("export", total=None)

    def __enter__(self) -> Stages:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def expect(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    @contextmanager
    def __call__(self, name: str):
        self.progress.update(self.task, description=name)
        started = time.perf_counter()
        yield
        self.progress.advance(self.task)
        self.console.print(f"{name}: {time.perf_counter() - started:.1f} s", highlight=False)

    def report(self, parity: Parity) -> None:
        for error in parity.outputs:
            verdict = "ok" if error.max_rel <= parity.tolerance else "BEYOND TOLERANCE"
            self.console.print(
                f"  {error.name}: max abs {error.max_abs:.1e}, max rel {error.max_rel:.1e} "
                f"(tolerance {parity.tolerance:g}) {verdict}",
                highlight=False,
            )


def code_digest(packages: tuple[Path, ...]) -> str:
    """sha256 over the Python sources of ``packages`` (path and text of each file, in path order): the code that
    writes the graphs. Any edit changes it, a comment too; a rebuild costs less than a stale bundle."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            digest.update(f"{package.name}/{path.relative_to(package).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def bundle_key(sources: Sources, dims: Dims, precision: str, template: str, token_merging: float | None = None) -> str:
    """sha256 over what decides a bundle's content; the same inputs always give the same key."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "code": code_digest(TRACED_CODE),
        "versions": versions(),
        "opset": OPSET,
        "sources": {s.role: s.files for s in sources.entries},
        "height": dims.height,
        "width": dims.width,
        "precision": precision,
        "template": template,
        "unet_batches": list(dims.unet_batches),
        "token_slots": dims.token_slots,
        "lora_scale": sources.lora.scale if sources.lora else None,
        "preset": preset_key(sources.preset) if sources.preset else None,
        "token_merging": token_merging,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def preset_key(preset: Preset) -> dict:
    """What of a distillation preset shapes the bundle: its name and recipe (the manifest's) and the alpha a layer
    without one is fused at (runtime/sampling.py is not among the code the key hashes)."""
    return {"name": preset.name, "sampling": preset.sampling.to_json(), "lora_alpha": preset.lora_alpha}


def bundle_recipe(sources: Sources, dims: Dims) -> Recipe:
    """What the bundle holds and how it is meant to draw: with a LoRA fused, its distillation preset's name and
    recipe (lcm: LCM, 4 steps, guidance 1); else the default's (DPM-Solver++ 25 steps at 7.5; guidance 1 if its UNet
    holds batch 1 only)."""
    batches = dims.unet_batches
    if sources.preset is not None:
        return Recipe(batches, sources.decoder, sources.lora, sources.preset.sampling, sources.preset.name)
    sampling = DEFAULT if GUIDED_BATCH in batches else replace(DEFAULT, guidance=1.0)
    return Recipe(batches, sources.decoder, None, sampling)


def reusable_manifest(out: Path, key: str, force: bool, update: bool) -> Manifest | None:
    """The manifest of an up-to-date bundle at ``out``; None when there is nothing to keep (``update``: nor a bundle
    with another key); an error on a conflict."""
    if force or not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder", hint="choose another --out")
    try:
        manifest = read_manifest(out)
    except BundleError as exc:
        raise BundleError(
            f"{out}: exists but holds no readable bundle ({exc})",
            hint="pass --force to replace it, or choose another --out",
        ) from exc
    if manifest.key == key:
        return verify(out)
    if update:
        return None
    raise BundleError(
        f"{out}: holds a bundle built from other sources, options or code (key {manifest.key[:12]}, this export {key[:12]})",
        hint="pass --update (or --force) to rebuild it, or choose another --out",
    )


def run_reference(network: Network) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], Sample]:
    """The network's wrapper module, its sample, and PyTorch's output on it (the reference every engine must match)."""
    module = network.build()
    args = network.sample()
    with torch.no_grad():
        outputs = module(*args)  # one tensor per engine in this project
    return module, args, (tuple(a.numpy() for a in args), (outputs.numpy(),))


def export_engine(network: Network, folder: Path, options: ExportOptions, stage: Stages) -> tuple[Engine, Sample]:
    """ONNX file of one network in ``folder``, checked and compared with PyTorch."""
    with stage(f"export {network.name}"):
        module, args, sample = run_reference(network)
        if network.traced_form is not None:
            module = network.traced_form(module)
        model = trace_to_onnx(module, args, network, folder / f".{network.name}.trace")
        del module, args
        gc.collect()  # one network in memory at a time: the UNet alone is 3.4 GB in fp32
    precision = engine_precision(network, options.precision)
    ratio, note = merged_tokens(network, options), ""
    if precision == "fp16":
        with stage(f"fp16 {network.name}"):
            to_fp16(model, network.fp32_scopes, network.fp32_ops)
    if precision == "int8":
        if network.fused_attention:  # an int8 graph runs on ONNX Runtime's CPU provider only: fuse it outright
            with stage(f"fuse attention {network.name}"):
                fuse_attention(model)
        if ratio is not None:
            with stage(f"merge tokens {network.name}"):
                note = merge_unet_tokens(model, network, ratio)
        with stage(f"int8 {network.name}"):
            scratch = folder / f".{network.name}.int8"
            if network.int8_calibration is None:
                model = to_int8(model, network.int8_fp32_scopes, scratch)
            else:
                names = [spec.name for spec in network.inputs]
                feeds = [
                    dict(zip(names, (t.numpy() for t in inputs), strict=True)) for inputs in network.int8_calibration()
                ]
                model = to_calibrated_int8(model, feeds, scratch)
    file, data = save_onnx(model, folder, network.name)
    del model
    with stage(f"validate {network.name} (onnxruntime cpu)"):
        parity = measure_parity(folder / file, network, *sample, precision)
    if note:
        parity = replace(parity, sample=f"{parity.sample}; {note}")
    stage.report(parity)
    check_parity(network, parity, options.allow_parity_error)
    variants = ()
    if network.fused_attention and precision == "fp32":  # beside the plain graph TensorRT and OpenVINO need
        variants = (fused_variant(network, folder, file, sample, options, stage),)
    engine = Engine(
        network.name,
        FileEntry.of(folder, file),
        FileEntry.of(folder, data),
        precision,
        network.inputs,
        network.outputs,
        parity,
        variants=variants,
    )
    return engine, sample


def merged_tokens(network: Network, options: ExportOptions) -> float | None:
    """The share of tokens ``network``'s engine merges (--token-merging: the UNet of an int8 bundle), or None."""
    return options.token_merging if network.name == UNET and options.precision == "int8" else None


def merge_unet_tokens(model: onnx.ModelProto, network: Network, ratio: float) -> str:
    """Merge ``ratio`` of the tokens before the UNet's self-attentions at its highest resolution (the latent's, from
    its sample input [N, 4, h, w]); return what was done, for the parity record."""
    h, w = network.inputs[0].shape[2:]
    merged = merge_tokens(model, ratio, (h, w))
    if not merged:
        raise ExportError(
            f"{network.name}: --token-merging found no fused self-attention over the {h}x{w} latent to merge",
            hint="leave --token-merging out for this UNet",
        )
    return (
        f"tokens merged at {ratio:g} (ToMe) in its {merged} self-attentions at {h}x{w}, compared with the unmerged UNet"
    )


def fused_variant(
    network: Network, folder: Path, file: str, sample: Sample, options: ExportOptions, stage: Stages
) -> Variant:
    """``<engine>.fused.onnx``: the saved graph with each attention fused into one ONNX Runtime node, over the same
    external data file (the fusion moves no weight), validated like the engine."""
    name = f"{network.name}.fused.onnx"
    with stage(f"fuse attention {network.name}"):
        graph = onnx.load(str(folder / file), load_external_data=False)  # nodes only: the weights stay in the data file
        fuse_attention(graph)
        onnx.save_model(graph, str(folder / name))
        onnx.checker.check_model(str(folder / name))
    with stage(f"validate {name} (onnxruntime cpu)"):
        parity = measure_parity(folder / name, network, *sample, "fp32")
    stage.report(parity)
    check_parity(network, parity, options.allow_parity_error)
    return Variant(FileEntry.of(folder, name), FUSED_DEVICES, parity)


def engine_stages(network: Network, options: ExportOptions) -> int:
    """How many progress stages ``export_engine`` (and ``add_plans``) go through for ``network``: export and validate;
    fp16 or int8 conversion; fusing the attention (int8: in the graph; fp32: a variant, validated too); merging
    tokens; a plan."""
    precision = engine_precision(network, options.precision)
    fused = network.fused_attention and precision in ("int8", "fp32")
    merged = merged_tokens(network, options) is not None
    return 2 + (precision != "fp32") + fused + (fused and precision == "fp32") + merged + options.tensorrt


def engine_precision(network: Network, precision: str) -> str:
    """The precision of one engine in a bundle of ``precision``: int8 bundles quantize only the networks marked int8."""
    return "fp32" if precision == "int8" and not network.int8 else precision


def add_plans(
    folder: Path,
    engines: dict[str, Engine],
    networks: list[Network],
    samples: dict[str, Sample],
    options: ExportOptions,
    stage: Stages,
) -> dict[str, Engine]:
    """Build the TensorRT plans this GPU and TensorRT version lack; return the engines with them recorded."""
    result = dict(engines)
    for network in networks:
        engine = engines[network.name]
        with stage(f"tensorrt {network.name}"):
            if any(p.file.path == plan_file(network) for p in engine.plans):
                continue
            if network.name not in samples:
                samples[network.name] = run_reference(network)[2]
            plan = build_plan(folder / engine.file.path, network, engine.precision, *samples[network.name])
        stage.report(plan.parity)
        check_parity(network, plan.parity, options.allow_parity_error)
        result[network.name] = replace(engine, plans=(*engine.plans, plan))
    return result


def versions() -> dict[str, str]:
    """Package versions of the export; ONNX Runtime's from the module, whichever build (-gpu, -openvino) provides it."""
    import onnxruntime

    names = ("audiotoken-rt", "torch", "diffusers", "transformers", "onnx")
    return {**{name: metadata.version(name) for name in names}, "onnxruntime": onnxruntime.__version__}


def build_bundle(
    options: ExportOptions,
    sources: Sources,
    dims: Dims,
    key: str,
    template: str,
    networks: list[Network],
    stage: Stages,
) -> Manifest:
    """Write every file of the bundle into a folder beside ``--out``, then move it into place."""
    with building_folder(options.out) as staging:
        engines, samples = {}, {}
        for network in networks:
            engines[network.name], samples[network.name] = export_engine(network, staging, options, stage)
        with stage("tokenizer and scheduler config"):
            placeholder_id = write_tokenizer(sources, staging)
            shutil.copyfile(
                sources.sd.folder / "scheduler" / "scheduler_config.json", staging / "scheduler_config.json"
            )
        if options.tensorrt:
            engines = add_plans(staging, engines, networks, samples, options, stage)
        tokenizer_files = sorted(
            p.relative_to(staging).as_posix() for p in (staging / TOKENIZER_DIR).rglob("*") if p.is_file()
        )
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            key=key,
            sources=sources.entries,
            precision=options.precision,
            opset=OPSET,
            token_dim=dims.token_dim,
            placeholder=PLACEHOLDER,
            placeholder_id=placeholder_id,
            template=template,
            height=dims.height,
            width=dims.width,
            vae_scaling_factor=float(sources.autoencoder_config()["scaling_factor"]),
            prediction_type=sources.sd.prediction_type(),
            scheduler_config=sources.sd.scheduler_config(),
            tokenizer=TOKENIZER_DIR,
            files=tuple(FileEntry.of(staging, p) for p in ["scheduler_config.json", *tokenizer_files]),
            engines=engines,
            created_with=versions(),
            recipe=bundle_recipe(sources, dims),
            token_slots=dims.token_slots,
        )
        write_manifest(staging, manifest)
    return manifest


def export_bundle(options: ExportOptions, console: Console | None = None) -> Exported:
    """Export (or reuse) the bundle ``options`` describe (a LoRA's recipe and ``--fast``'s sources filled in from the
    distillation preset); see the module docstring for the steps."""
    options = options.with_preset()
    if options.precision not in PRECISIONS:
        raise ConfigError(f"--precision {options.precision!r}: expected one of {', '.join(PRECISIONS)}")
    preset = options.distillation() if options.lora is not None else None  # with_preset named it
    lora_scale = options.lora_scale if options.lora_scale is not None else 1.0
    if not math.isfinite(lora_scale):  # the manifest records it, and its reader takes finite numbers only
        raise ConfigError(f"--lora-scale is {lora_scale}; it must be a finite number")
    if preset is not None:
        try:
            preset.sampling.check()  # a recipe the manifest's reader and generate --fast take
        except ConfigError as exc:
            raise ConfigError(f"--preset {preset.name}: its recipe cannot be drawn here ({exc})") from None
    template = check_template(options.template)
    batches = parse_unet_batches(options.unet_batch, options.lora)
    if options.token_merging is not None and (options.precision != "int8" or len(batches) != 1):
        raise ConfigError(
            f"--token-merging is for int8 bundles of one UNet batch; this export is --precision {options.precision}, "
            f"--unet-batch {','.join(map(str, batches))}",
            hint="export --precision int8 with --unet-batch 1 (or 2), or leave --token-merging out",
        )
    removed = remove_stale_builds(options.out)
    if options.tensorrt:
        if options.precision == "int8":
            raise ConfigError(
                "--precision int8 is for CPUs (ONNX Runtime); TensorRT plans are built in fp16",
                hint="export --precision fp16 --tensorrt for the GPU, in another --out",
            )
        require_tensorrt()
    console = console or Console(stderr=True)
    for folder in removed:
        console.print(f"removed {folder}, left by an export that was killed", highlight=False)
    with Stages(console) as stage:
        with stage("hash sources"):
            sources = resolve_sources(
                options.sd,
                options.beats,
                options.embedder,
                options.lora,
                lora_scale,
                options.tiny_vae,
                options.unet,
                preset,
            )
            dims = read_dims(sources, options.height, options.width, batches)
            if options.token_merging is not None:  # before any export work, like every other option
                check_merging(options.token_merging, (dims.height // VAE_FACTOR, dims.width // VAE_FACTOR))
            placement = sources.place_lora()
        if placement is not None and placement.skipped:
            console.print(
                f"LoRA {placement.file}: {placement.skipped} of its {len(placement.layers)} layers are in blocks the "
                f"--unet UNet lacks, left out; the other {len(placement.targets)} are fused",
                highlight=False,
            )
        key = bundle_key(sources, dims, options.precision, template, options.token_merging)
        networks = describe_networks(sources, dims, template, options.sample_clip)
        manifest = reusable_manifest(options.out, key, options.force, options.update)
        if manifest is not None:
            console.print(f"{options.out} is up to date (key {key[:12]}); pass --force to rebuild it", highlight=False)
            if options.tensorrt:
                stage.expect(1 + len(networks))
                engines = add_plans(options.out, manifest.engines, networks, {}, options, stage)
                manifest = replace(manifest, engines=engines)
                write_manifest(options.out, manifest)
            return Exported(options.out, manifest, reused=True)
        stage.expect(1 + sum(engine_stages(n, options) for n in networks) + 1)
        manifest = build_bundle(options, sources, dims, key, template, networks, stage)
    return Exported(options.out, manifest, reused=False)
