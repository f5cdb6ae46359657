"""``audiotoken-rt triton-repo``: a bundle as a standalone Triton model repository, for deployments that run
Triton's own container (Kubernetes replicas behind a load balancer) rather than ``audiotoken-rt serve``.

Place in the data flow: a bundle (``runtime.bundle``) -> OUT/ with one model per engine (``onnxruntime_onnx``, the
bundle's ONNX file and its external data; ``tensorrt_plan`` with ``--tensorrt``, the plan built for this GPU and
TensorRT) and the ``audiotoken`` model: Triton's Python backend running ``runtime.serving.triton_model`` as a BLS model
that chains them (tokenizer, numpy schedulers, guidance and noise from the runtime, so Triton's Python environment needs
``pip install audiotoken-rt``), with the bundle's manifest and tokenizer in ``audiotoken/1/bundle``. Its
``config.pbtxt`` files are Triton's model configuration in protobuf text format; the ``audiotoken`` model's holds
``serve``'s request queue (``--max-queue`` waiting at most ``--timeout`` s, then refused) and request limits
(``--max-steps``, ``--max-samples``, as parameters the BLS model reads).

Writing: the bundle's files are reached through ``Bundle.file_path`` (inside the bundle, as hashed) and
hard-linked where the file system allows (an SD 1.5 UNet is 3.4 GB), copied otherwise, into a fresh folder beside
OUT (``runtime.atomic.building_folder``) where every file is created new at a path checked to stay inside it
(``Staging``): never through a symlink, never onto a file already there. Only the finished repository replaces OUT
(``--overwrite``), so a failed build leaves the old one as it was.
The native backends cannot run here: the repository's structure and configurations are checked by the tests, and
the BLS model's logic is run there against fake engine calls that use ONNX Runtime.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import typer

from runtime.atomic import building_folder
from runtime.bundle import MANIFEST, UNTRUSTED_HINT, Bundle, bundle_path
from runtime.commands.cli import option, options_from, reports_errors
from runtime.contract import TensorSpec
from runtime.errors import BundleError, ConfigError
from runtime.serving.serve import INPUTS, RequestLimits, ServeOptions
from runtime.tensorrt import manifest_plan

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
# The audiotoken model's I/O: runtime.serving.serve's (INPUTS), without Triton's batch dimension (max_batch_size 0
# here).
BLS_OUTPUTS = (("IMAGE", "TYPE_UINT8", (-1, -1, 3)), ("SEED_USED", "TYPE_INT64", (1,)))


def tensor_block(name: str, data_type: str, dims, optional: bool = False) -> str:
    extra = "\n    optional: true" if optional else ""
    return (
        f'  {{\n    name: "{name}"\n    data_type: {data_type}\n    dims: [ {", ".join(map(str, dims))} ]{extra}\n  }}'
    )


def model_config(name: str, head: str, inputs: list[str], outputs: list[str], instance: str) -> str:
    """A Triton ``config.pbtxt``: ``head`` (platform or backend line), no batching, the I/O blocks, instances."""
    separator = ",\n"
    return (
        f'name: "{name}"\n{head}\nmax_batch_size: 0\n'
        f"input [\n{separator.join(inputs)}\n]\noutput [\n{separator.join(outputs)}\n]\n"
        f"instance_group [\n  {{\n    {instance}\n  }}\n]\n"
    )


def spec_block(spec: TensorSpec) -> str:
    return tensor_block(spec.name, TRITON_TYPES[spec.dtype], spec.shape)


def queue_block(settings: ServeOptions) -> str:
    """Triton's request queue for a model of max_batch_size 0: at most ``max_queue`` requests waiting, each at
    most ``timeout`` seconds, then refused (``serve``'s queue)."""
    return (
        "dynamic_batching {\n  default_queue_policy {\n    timeout_action: REJECT\n"
        f"    default_timeout_microseconds: {round(settings.timeout * 1e6)}\n"
        f"    allow_timeout_override: false\n    max_queue_size: {settings.max_queue}\n  }}\n}}\n"
    )


def parameters_block(limits: RequestLimits) -> str:
    """The request limits as the model configuration's parameters, which ``runtime.serving.triton_model`` reads."""
    entries = ",\n".join(
        f'  {{\n    key: "{f.name}"\n    value: {{ string_value: "{getattr(limits, f.name)}" }}\n  }}'
        for f in fields(RequestLimits)
    )
    return f"parameters [\n{entries}\n]\n"


class Staging:
    """The fresh folder a repository is built in. Files are only ever created in it, at paths checked to lie inside
    it: never written through a symlink or onto a file already there, so nothing a bundle names (its manifest's
    paths, a symlink among its files) can make ``triton-repo`` write anywhere else."""

    def __init__(self, root: Path):
        self.root = root
        self.resolved = root.resolve()

    def path(self, relative: str) -> Path:
        """``root / relative`` with its folders made, once ``relative`` is a plain relative path that stays inside."""
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or any(part in (".", "..") for part in parts):
            raise BundleError(f"{relative!r}: not a plain relative path; triton-repo writes only inside its output")
        target = self.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.resolve() != self.resolved.joinpath(*parts[:-1]):
            raise BundleError(f"{target.parent}: leads outside {self.root} through a symlink")
        return target

    def link(self, source: Path, relative: str) -> None:
        """``source`` as the new file ``relative``: a hard link where the file system allows (an SD 1.5 UNet is
        3.4 GB), a copy otherwise."""
        target = self.path(relative)
        try:
            os.link(source, target)
            return
        except FileExistsError:
            raise already_written(target) from None
        except OSError:  # another file system, or one without hard links
            pass
        with open(source, "rb") as data:
            self.write(relative, data)

    def write(self, relative: str, data: bytes | BinaryIO) -> None:
        """A new file ``relative`` holding ``data`` (bytes, or a binary file read to its end)."""
        target = self.path(relative)
        try:
            with open(target, "xb") as out:  # O_CREAT | O_EXCL: never an existing file, never through a symlink
                if isinstance(data, bytes):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out)
        except FileExistsError:
            raise already_written(target) from None


def already_written(target: Path) -> BundleError:
    return BundleError(f"{target}: the bundle names this file twice", hint=UNTRUSTED_HINT)


def write_repository(
    bundle: Bundle,
    out: Path,
    *,
    plans_for: tuple[str, str] | None,
    gpu: bool,
    instances: int,
    settings: ServeOptions = ServeOptions(),
    limits: RequestLimits = RequestLimits(),
) -> Path:
    """The model repository of ``bundle`` at ``out`` (see the module docstring), built aside and swapped in; with
    ``plans_for`` (a TensorRT version and GPU name), each engine as the TensorRT plan the manifest records for them."""
    manifest = bundle.manifest
    kind = "kind: KIND_GPU" if gpu else "kind: KIND_CPU"
    with building_folder(out) as folder:
        staging = Staging(folder)
        for name, engine in manifest.engines.items():
            if plans_for is not None:
                field, plan = manifest_plan(bundle, name, *plans_for)  # this GPU's, or one line saying there is none
                staging.link(bundle.file_path(f"{field}.file", plan.file), f"{name}/1/model.plan")
                head = 'platform: "tensorrt_plan"'
            else:  # the fused-attention variant where there is one
                staging.link(bundle.engine_path(name, "cuda" if gpu else "cpu"), f"{name}/1/model.onnx")
                if engine.data is not None:  # the ONNX file names its weights file relative to its own folder
                    data = bundle.file_path(f"engines.{name}.data", engine.data)
                    graph = engine.graph_for("cuda" if gpu else "cpu").path
                    beside = posixpath.relpath(engine.data.path, posixpath.dirname(graph) or ".")
                    staging.link(data, f"{name}/1/{beside}")  # Staging refuses a '..' (a data file above its graph)
                head = 'platform: "onnxruntime_onnx"'
            config = model_config(
                name,
                head,
                [spec_block(spec) for spec in engine.inputs],
                [spec_block(spec) for spec in engine.outputs],
                f"count: 1\n    {kind}",
            )
            staging.write(f"{name}/config.pbtxt", config.encode())
        for field_name, entry in manifest.named_files():
            staging.link(bundle.file_path(field_name, entry), f"audiotoken/1/bundle/{entry.path}")
        staging.link(bundle_path("manifest", MANIFEST, bundle.root), f"audiotoken/1/bundle/{MANIFEST}")
        staging.write("audiotoken/1/model.py", Path(__file__).with_name("triton_model.py").read_bytes())
        config = model_config(
            "audiotoken",
            'backend: "python"',
            [tensor_block(name, triton_type, dims, optional) for name, _, triton_type, dims, optional in INPUTS],
            [tensor_block(*spec) for spec in BLS_OUTPUTS],
            f"count: {instances}\n    kind: KIND_CPU",  # the BLS loop itself is host work; its engines run on `kind`
        )
        staging.write("audiotoken/config.pbtxt", (config + queue_block(settings) + parameters_block(limits)).encode())
    return out


@reports_errors
def triton_repo_command(
    bundle: Path = typer.Argument(..., help="Engine bundle folder.", show_default=False),
    out: Path = typer.Argument(..., help="The model repository folder to write.", show_default=False),
    tensorrt: bool = typer.Option(
        False, "--tensorrt", help="Engines as TensorRT plans (built for the serving GPU) instead of ONNX files."
    ),
    gpu: bool = typer.Option(False, "--gpu", help="Run the engine models on the GPU (KIND_GPU instances)."),
    instances: int = typer.Option(1, "--instances", help="Instances of the audiotoken (BLS) model."),
    max_queue: int = option(ServeOptions, "max_queue", "--max-queue"),
    timeout: float = option(ServeOptions, "timeout", "--timeout"),
    max_steps: int = option(RequestLimits, "max_steps", "--max-steps"),
    max_samples: int = option(RequestLimits, "max_samples", "--max-samples"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace OUT if it exists (the new one is built aside; the old stays until then)."
    ),
) -> None:
    """Write a Triton model repository for Triton's own container: the engines as ONNX Runtime (or TensorRT) models
    and the denoising loop as a Python-backend BLS model named audiotoken, its queue and request limits as serve's."""
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists", hint="pass --overwrite to replace it, or choose another folder")
    if instances < 1:
        raise ConfigError(f"--instances {instances}: expected at least 1")
    settings = options_from(ServeOptions, locals())
    limits = options_from(RequestLimits, locals())
    settings.check()
    limits.check()
    opened = Bundle.open(bundle)
    if tensorrt:
        from runtime.tensorrt import current_gpu_name, import_tensorrt

        import_tensorrt()
        import tensorrt as trt

        plans_for = (trt.__version__, current_gpu_name())
    write_repository(
        opened,
        out,
        plans_for=plans_for if tensorrt else None,
        gpu=gpu or tensorrt,
        instances=instances,
        settings=settings,
        limits=limits,
    )
    typer.echo(f"wrote {out}: models {', '.join([*opened.manifest.engines, 'audiotoken'])}")
