"""The Python-backend model file (``model.py``) of each model ``audiotoken-rt serve`` binds: PyTriton's proxy model,
with a failed request answered by an error response of one line instead of a traceback.

Place in the data flow: Triton's Python stub process (one per model instance) runs this file, which PyTriton ships with
its own proxy model beside it as ``pytriton_model.py`` (``runtime.serving.serve.one_line_proxy``). The proxy forwards
each request to the ``serve`` process, where ``runtime.serving.serve.Models`` answers it or raises a ``RequestError`` or
``ServerError``, which PyTriton 0.7 sends back formatted as ``<module>.<class>: <line>`` (they carry no traceback). The
proxy then raises it from ``execute`` wrapped in its own traceback, and Triton would send all of that to the client.
Here that failure becomes, for each request of the batch, an error response holding the line alone, with Triton's code
for a bad request (HTTP 400, gRPC INVALID_ARGUMENT) after a ``RequestError`` and for a server fault (500, INTERNAL)
after anything else, a failure of PyTriton's own included (the last line of its traceback).

Memory: the proxy leaves each request's tensors in reference cycles, which hold their part of the instance's shared
memory region (Triton's Python backend grows it on demand and never shrinks it) until Python's cyclic collector
happens to run. Requests of 32 MB grew each instance's region to 590 MB that way (``runtime.serving.soak``), so the
collector runs after every batch here: the region then holds about one request's tensors.

It runs inside Triton's stub, beside PyTriton's files only: it imports nothing of audiotoken-rt.
"""

import gc

import triton_python_backend_utils as pb_utils

from .pytriton_model import TritonPythonModel as PyTritonProxyModel


def failure_line(wrapped: BaseException) -> tuple[str, str]:
    """The class name and message of the failure the proxy wrapped. PyTriton hands on a failure of the ``serve``
    process as a TritonModelException whose text is the formatted exception, ending in ``module.Class: message``;
    any other failure in the proxy is the exception itself."""
    cause = wrapped.__context__ or wrapped
    if not isinstance(cause, pb_utils.TritonModelException):
        return type(cause).__name__, (str(cause).strip().splitlines() or [""])[0]
    lines = [line for line in str(cause).splitlines() if line.strip()] or ["TritonModelException"]
    kind, _, message = lines[-1].partition(": ")
    return kind.rsplit(".", 1)[-1], message.strip() or kind


class TritonPythonModel(PyTritonProxyModel):
    """PyTriton's proxy, its failed batches answered one line per request, its garbage collected after each."""

    def execute(self, requests):
        try:
            return super().execute(requests)
        except pb_utils.TritonModelException as wrapped:
            kind, message = failure_line(wrapped)
            code = pb_utils.TritonError.INVALID_ARG if kind == "RequestError" else pb_utils.TritonError.INTERNAL
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)) for _ in requests]
        finally:
            gc.collect()
