"""Runtimes other than torch that run the folded network: ONNX Runtime (:mod:`.onnxruntime`)."""
