"""The ``audiotoken`` model of a standalone Triton model repository (``audiotoken-rt triton-repo``): Triton's Python
backend runs this file as ``audiotoken/1/model.py``, a BLS (business logic scripting) model.

Place in the data flow: a request (AUDIO [N, C], SAMPLE_RATE [1], the optional inputs of ``runtime.serving.serve``) ->
``TritonPythonModel.execute`` -> ``runtime.pipeline.Pipeline`` over ``TritonEngines``, the runtime's backend protocol
answered by BLS calls to the repository's engine models (``audio_encoder``, ``text_encoder``, ``unet``, ``vae_decoder``,
``vae_encoder``: ONNX Runtime or TensorRT models beside this one) -> IMAGE [H, W, 3] uint8 and SEED_USED [1]. The
tokenizer, schedulers, guidance and noise are the runtime's own, so Triton's container needs the ``audiotoken-rt``
package installed (``pip install audiotoken-rt`` in its Python environment). The bundle's manifest and tokenizer travel
in ``audiotoken/1/bundle``; the request limits (``runtime.serving.serve.RequestLimits``) in the model configuration's
parameters, as ``triton-repo`` wrote them. A bad request gets an error response of one line naming its input (Triton's
code for a bad request), a failure on the server's side one line too (an internal error, its traceback in Triton's log);
the model keeps serving.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from runtime.bundle import Bundle
from runtime.errors import ConfigError
from runtime.pipeline import Pipeline
from runtime.serving.serve import INPUTS, Models, OneLineError, RequestError, RequestLimits, ServerError


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
            raise ServerError(f"engine {engine}: {' '.join(response.error().message().split())}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in self.outputs[engine]}


class TritonPythonModel:
    """Triton's Python-backend entry points."""

    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / args["model_version"] / "bundle"
        bundle = Bundle.open(folder)
        parameters = json.loads(args["model_config"]).get("parameters", {})
        try:  # config.pbtxt's parameters (triton-repo writes them; a hand edit may not be numbers)
            limits = RequestLimits(
                **{
                    f.name: int(parameters[f.name]["string_value"])
                    for f in fields(RequestLimits)
                    if f.name in parameters
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"config.pbtxt: a request limit is not a whole number ({exc})") from None
        limits.check()
        self.models = Models(Pipeline(bundle, TritonEngines(bundle)), limits)

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
            except OneLineError as exc:
                code = (
                    pb_utils.TritonError.INVALID_ARG if isinstance(exc, RequestError) else pb_utils.TritonError.INTERNAL
                )
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code)))
                continue
            outputs = [pb_utils.Tensor(name, value[0]) for name, value in answer.items()]  # without the batch
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
