"""The ``torch`` backend: a bundle's engines run as the PyTorch networks they were exported from, for A/B checks.

Place in the data flow: registered as the ``torch`` backend under the runtime's ``audiotoken_rt.backends`` entry-point
group (pyproject.toml), so ``runtime.backends.open_backend("torch")`` finds it without the runtime importing anything of
the PyTorch side -> ``TorchBackend.run(engine, feeds)``, the same protocol as ONNX Runtime and TensorRT, so the runtime
pipeline (tokenizer, numpy schedulers, guidance) is shared and only the networks differ. The networks are
``export.networks``' wrapper modules, built from the sources the manifest names (Stable Diffusion, BEATs, embedder; a
LoRA, TAESD, a small UNet), which must still exist and hash as they did at export.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from audiotoken.stable_diffusion import quiet_libraries
from export.networks import describe_networks, read_dims
from export.sources import resolve_sources
from runtime.bundle import UNET_SOURCE, Bundle
from runtime.errors import BundleError, ConfigError


class TorchBackend:
    """PyTorch wrapper modules per engine, built on first use and kept."""

    name = "torch"

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"--backend torch runs on cpu or cuda, not {device!r}")
        quiet_libraries()
        m = bundle.manifest
        refs = {s.role: s for s in m.sources}
        lora = m.recipe.lora
        sources = resolve_sources(
            refs["sd"].ref,
            refs["beats"].ref,
            refs["embedder"].ref,
            lora=lora.source if lora else None,
            lora_scale=lora.scale if lora else 1.0,
            tiny_vae=refs["tiny_vae"].ref if "tiny_vae" in refs else None,
            unet=refs[UNET_SOURCE].ref if UNET_SOURCE in refs else None,
            preset=m.recipe.distillation(),
        )
        for entry in sources.entries:
            if entry.files != refs[entry.role].files:
                raise BundleError(
                    f"{entry.ref}: the {entry.role} files differ from those {bundle.root} was exported from",
                    hint=f"re-export the bundle from these files: {m.rebuild_command(bundle.root)}",
                )
        dims = read_dims(sources, m.height, m.width, m.recipe.unet_batches)
        self.networks = {n.name: n for n in describe_networks(sources, dims, m.template, clip=None)}
        self.device = device
        self.modules: dict[str, torch.nn.Module] = {}
        self.lock = threading.Lock()

    def module(self, engine: str) -> torch.nn.Module:
        with self.lock:
            if engine not in self.modules:
                self.modules[engine] = self.networks[engine].build().to(self.device)
            return self.modules[engine]

    def run(self, engine: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        network = self.networks[engine]
        module = self.module(engine)
        inputs = [torch.from_numpy(np.ascontiguousarray(feeds[spec.name])).to(self.device) for spec in network.inputs]
        with torch.inference_mode():
            outputs = module(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return {spec.name: out.float().cpu().numpy() for spec, out in zip(network.outputs, outputs, strict=True)}
