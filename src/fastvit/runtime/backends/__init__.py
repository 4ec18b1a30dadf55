"""Runtimes other than torch that run the folded network: ONNX Runtime (:mod:`.onnxruntime`) and
OpenVINO (:mod:`.openvino`), each caching what it builds from a model by a digest of its weights and
layers (:mod:`.cache`)."""
