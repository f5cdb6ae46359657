"""export: offline conversion of the PyTorch model to ONNX and TensorRT engine bundles (see docs/architecture.md).

Data flow (``audiotoken-rt export`` -> ``export.builder.export_bundle``):
``sources`` (hub id or folder, hashed) -> ``networks`` (one description per engine) -> ``onnx_file`` (trace,
save, check) -> ``fp16`` (for --precision fp16) or ``int8`` (the UNet, for --precision int8) -> ``parity`` (ONNX Runtime vs PyTorch) -> ``tokenizer`` ->
``tensorrt`` (for --tensorrt) -> ``engines/<name>/`` with the manifest of ``runtime.bundle``. ``options`` holds
what the export can be asked for, ``cli`` the ``export`` command, ``torch_backend`` the PyTorch reference backend.
"""
