"""export: offline conversion of the PyTorch model to ONNX and TensorRT engine bundles (see DESIGN.md)."""
