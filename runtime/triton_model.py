"""The ``audiotoken`` model of a standalone Triton model repository (``audiotoken-rt triton-repo``): Triton's Python
backend runs this file as ``audiotoken/1/model.py``, a BLS (business logic scripting) model.

Place in the data flow: a request (AUDIO [N, C], SAMPLE_RATE [1], the optional inputs of ``runtime.serve``) ->
``TritonPythonModel.execute`` -> ``runtime.pipeline.Pipeline`` over ``TritonEngines``, the runtime's backend protocol
answered by BLS calls to the repository's engine models (``audio_encoder``, ``text_encoder``, ``unet``,
``vae_decoder``, ``vae_encoder``: ONNX Runtime or TensorRT models beside this one) -> IMAGE [H, W, 3] uint8 and
SEED_USED [1]. The tokenizer, schedulers, guidance and noise are the runtime's own, so Triton's container needs the
``audiotoken-rt`` package installed (``pip install audiotoken-rt`` in its Python environment). The bundle's
manifest and tokenizer travel in ``audiotoken/1/bundle``. A bad request gets an error response naming its input;
the model keeps serving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from runtime.bundle import Bundle
from runtime.errors import AudioTokenError
from runtime.pipeline import Pipeline
from runtime.serve import INPUTS, Models, RequestError


class TritonEngines:
    """The runtime's backend protocol (``run(engine, feeds) -> outputs``) as BLS calls to the engine models."""

    name = "triton"
    device = "triton"

    def __init__(self, bundle: Bundle):
        self.outputs = {
            name: [spec.name for spec in engine.outputs] for name, engine in bundle.manifest.engines.items()
        }

    def run(self, engine: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = pb_utils.InferenceRequest(
            model_name=engine,
            requested_output_names=self.outputs[engine],
            inputs=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in feeds.items()],
        )
        response = request.exec()
        if response.has_error():
            raise RequestError(f"engine {engine}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in self.outputs[engine]}


class TritonPythonModel:
    """Triton's Python-backend entry points."""

    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / args["model_version"] / "bundle"
        bundle = Bundle.open(folder)
        self.models = Models(Pipeline(bundle, TritonEngines(bundle)))

    def execute(self, requests) -> list:
        responses = []
        for request in requests:
            tensors = {}
            for name, *_ in INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    tensors[name] = tensor.as_numpy()[None]  # the serve models' batch of one
            try:
                (answer,) = self.models.draw_image([tensors])
            except (RequestError, AudioTokenError) as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
                continue
            outputs = [pb_utils.Tensor(name, value[0]) for name, value in answer.items()]  # without the batch
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
