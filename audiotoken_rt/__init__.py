"""audiotoken_rt: the ``audiotoken-rt`` command-line app, the top layer that assembles every command.

Layers, from the top (docs/architecture.md): this app -> ``audiotoken/`` (PyTorch model, training) and ``export/``
(PyTorch -> ONNX / TensorRT bundles) -> ``runtime/`` (the torch-free leaf). Each command's code lives beside the
layer it drives; this package only registers them (``audiotoken_rt.cli``).
"""
