"""``audiotoken-rt triton-repo``: a bundle as a standalone Triton model repository, for deployments that run
Triton's own container (Kubernetes replicas behind a load balancer) rather than ``audiotoken-rt serve``.

Place in the data flow: a bundle (``runtime.bundle``) -> OUT/ with one model per engine (``onnxruntime_onnx``, the
bundle's ONNX file and its external data; ``tensorrt_plan`` with ``--tensorrt``, the plan built for this GPU and
TensorRT) and the ``audiotoken`` model: Triton's Python backend running ``runtime.triton_model`` as a BLS model that
chains them (tokenizer, numpy schedulers, guidance and noise from the runtime, so Triton's Python environment needs
``pip install audiotoken-rt``), with the bundle's manifest and tokenizer in ``audiotoken/1/bundle``. Files are
hard-linked where the file system allows (an SD 1.5 UNet is 3.4 GB), copied otherwise; the repository is built
aside and renamed into place. Its ``config.pbtxt`` files are Triton's model configuration in protobuf text format.
The native backends cannot run here: the repository's structure and configurations are checked by the tests, and
the BLS model's logic is run there against fake engine calls that use ONNX Runtime.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer

from runtime.atomic import building_folder
from runtime.bundle import Bundle
from runtime.command import reports_errors
from runtime.contract import TensorSpec
from runtime.errors import BundleError, ConfigError
from runtime.serve import INPUTS
from runtime.tensorrt import plan_name

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
# The audiotoken model's I/O: runtime.serve's (INPUTS), without Triton's batch dimension (max_batch_size 0 here).
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


def place(source: Path, target: Path) -> None:
    """A hard link where the file system allows, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_repository(bundle: Bundle, out: Path, *, tensorrt: bool, gpu: bool, instances: int) -> Path:
    """The model repository of ``bundle`` at ``out`` (see the module docstring)."""
    manifest = bundle.manifest
    kind = "kind: KIND_GPU" if gpu else "kind: KIND_CPU"
    with building_folder(out) as staging:
        for name, engine in manifest.engines.items():
            version = staging / name / "1"
            if tensorrt:
                plans = [p for p in engine.plans if p.file.path.startswith(f"{name}.")]
                if not plans:
                    raise BundleError(
                        f"{bundle.root}: engine {name} has no TensorRT plan",
                        hint=f"build them on the serving GPU: audiotoken-rt export ... --out {bundle.root} --tensorrt",
                    )
                place(bundle.root / plans[-1].file.path, version / "model.plan")
                head = 'platform: "tensorrt_plan"'
            else:
                graph = engine.graph_for("cuda" if gpu else "cpu")  # the fused-attention variant where there is one
                place(bundle.root / graph.path, version / "model.onnx")
                if engine.data is not None:  # the ONNX file names its weights file: it keeps that name beside it
                    place(bundle.root / engine.data.path, version / engine.data.path)
                head = 'platform: "onnxruntime_onnx"'
            config = model_config(
                name,
                head,
                [spec_block(spec) for spec in engine.inputs],
                [spec_block(spec) for spec in engine.outputs],
                f"count: 1\n    {kind}",
            )
            (staging / name / "config.pbtxt").write_text(config)
        bls = staging / "audiotoken" / "1"
        for entry in manifest.all_files():
            place(bundle.root / entry.path, bls / "bundle" / entry.path)
        place(bundle.root / "manifest.json", bls / "bundle" / "manifest.json")
        shutil.copyfile(Path(__file__).with_name("triton_model.py"), bls / "model.py")
        config = model_config(
            "audiotoken",
            'backend: "python"',
            [tensor_block(name, triton_type, dims, optional) for name, _, triton_type, dims, optional in INPUTS],
            [tensor_block(*spec) for spec in BLS_OUTPUTS],
            f"count: {instances}\n    kind: KIND_CPU",  # the BLS loop itself is host work; its engines run on `kind`
        )
        (staging / "audiotoken" / "config.pbtxt").write_text(config)
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Write a Triton model repository for Triton's own container: the engines as ONNX Runtime (or TensorRT) models
    and the denoising loop as a Python-backend BLS model named audiotoken."""
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists", hint="pass --overwrite to replace it, or choose another folder")
    if instances < 1:
        raise ConfigError(f"--instances {instances}: expected at least 1")
    opened = Bundle.open(bundle)
    if tensorrt:
        from runtime.tensorrt import current_gpu_name, import_tensorrt

        import_tensorrt()
        import tensorrt as trt

        wanted = plan_name("unet", trt.__version__, current_gpu_name())
        if not (opened.root / wanted).is_file():
            raise BundleError(f"{bundle}: no {wanted} for this GPU and TensorRT", hint="export ... --tensorrt here")
    if out.exists():
        shutil.rmtree(out)
    write_repository(opened, out, tensorrt=tensorrt, gpu=gpu or tensorrt, instances=instances)
    typer.echo(f"wrote {out}: models {', '.join([*opened.manifest.engines, 'audiotoken'])}")
