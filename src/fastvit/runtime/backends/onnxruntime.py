"""The ONNX Runtime backend: the folded graph exported once per image size (cached on disk by weights
digest) and run by an ``InferenceSession``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import BackendError
from .cache import cached_entry, default_cache_dir, model_digest

__all__ = ["OrtRunner"]


class OrtRunner:
    """onnxruntime sessions on the folded graph, one per image size (a static size lets ONNX Runtime
    plan memory and pick its blocked-layout kernels; a dynamic one costs it ~20 %), each exported
    once with a dynamic batch and cached on disk by a digest of the model's weights and layers."""

    def __init__(self, folded: nn.Module, input_size: Sequence[int], threads: int | None, cache_dir):
        from ..export import import_onnxruntime

        self.ort = import_onnxruntime()
        self.folded = folded
        self.features = not hasattr(folded, "forward_head")  # features_only: the stage maps
        self.outputs = None if self.features else ("logits", "embedding")
        self.cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.digest = model_digest(folded)
        self.threads = threads
        self.sessions: dict[tuple[int, ...], Any] = {}
        self.session_for(tuple(input_size))

    def session_for(self, size: tuple[int, ...]):
        if size not in self.sessions:
            names = "_".join(self.outputs or ("maps",))
            path = self.cache / "onnx" / f"{self.digest}-{'x'.join(map(str, size))}-{names}.onnx"
            cached_entry([path], lambda: self._export(path, size))
            options = self.ort.SessionOptions()
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.threads:
                options.intra_op_num_threads = self.threads
            try:
                self.sessions[size] = self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime's own exception types
                raise BackendError(f"ONNX Runtime could not load {path}: {error}") from error
            self.path = path
        return self.sessions[size]

    def _export(self, path: Path, size: tuple[int, ...]) -> None:
        from ..export import export_onnx

        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as scratch:
            written = Path(scratch) / path.name
            export_onnx(self.folded, written, input_size=size, dynamic_batch=True, outputs=self.outputs, fold=False)
            os.replace(written, path)

    def __call__(
        self, images: Tensor, output: str, call: tuple[str, tuple[int, ...]] | None = None
    ) -> Tensor | list[Tensor]:
        """``output`` for ``images`` (a features_only model: its maps). ``call`` (the whole call's
        output and batch shape, which decides OpenVINO's static compilations) changes nothing
        here: a session serves every batch size."""
        x = images.detach().float().cpu().contiguous().numpy()
        session = self.session_for(tuple(x.shape[1:]))
        if self.features:
            return [torch.from_numpy(maps) for maps in session.run(None, {"input": x})]
        (result,) = session.run([{"forward": "logits", "embed": "embedding"}[output]], {"input": x})
        return torch.from_numpy(result)
