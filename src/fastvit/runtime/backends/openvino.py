"""The OpenVINO backend: the folded graph as OpenVINO IR (:func:`export_openvino`, also what ``fastvit
export --format openvino`` writes), converted once per image size and cached on disk by a digest of
the model's weights and layers, and run by OpenVINO's CPU plugin in fp32 or bf16
(:class:`OpenVinoRunner`)."""

from __future__ import annotations

import functools
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import BackendError
from ..compiling import CompiledShapes
from ..export import (
    ExportCheckError,
    ExportResult,
    OptionalDependencyError,
    check_shapes,
    compare_outputs,
    example_input,
    prepare_graph,
)
from ..options import check_input_size
from .cache import cached_entry, default_cache_dir, model_digest

__all__ = ["OpenVinoRunner", "export_openvino", "import_openvino", "shared_core"]

FP32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "SNIPPETS_MODE": "DISABLE"}
"""How fp32 is compiled (the precision is set explicitly: on a CPU with native bf16, OpenVINO's own
default is bf16). Compiled for a static shape, OpenVINO 2026.4's CPU plugin computes FastViT's
attention wrong in f32 when it has exactly 16 tokens (a 128x128 or 64x256 input) with its generated
'snippets' kernels: off by 2-6 % of the logits' scale on sa12, sa24, mci0 and mci1, against 1e-6
without them, at the same speed (T8 and SA12 at 256x256). bf16 is not affected."""


def import_openvino():
    try:
        import openvino
    except ImportError as error:
        raise OptionalDependencyError(
            "openvino is not installed; install the OpenVINO extra: pip install 'fastvit[openvino]'"
        ) from error
    return openvino


@functools.cache
def shared_core():
    """The process's one OpenVINO ``Core``, shared by every runner and export check. With a Core per
    runner, freeing an fp32 and a bf16 runner in one process corrupted memory (OpenVINO 2026.4: a
    segfault at a later, unrelated call)."""
    return import_openvino().Core()


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int] = (3, 256, 256),
    batch_size: int = 1,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    outputs: Sequence[str] | None = ("logits",),
    fold: bool = True,
    check: bool = True,
    rtol: float = 1e-4,
) -> ExportResult:
    """Write ``model`` (eval, folded unless ``fold=False``) as OpenVINO IR: the graph ``path``
    (``.xml``) and its float32 weights beside it (``.bin``), both in place at once or not at all;
    then check it with OpenVINO's CPU plugin in fp32 (at another batch and size too when those
    are dynamic). Inputs and outputs are named as :func:`~fastvit.runtime.export.export_onnx`
    names them."""
    ov = import_openvino()
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"{path}: an OpenVINO IR file name ends in .xml (its weights go beside it, in .bin)")
    start = time.perf_counter()
    reference = model.eval()
    wrapped, names = prepare_graph(model, fold, outputs)
    input_size = check_input_size(model, input_size, batch_size)
    channels, height, width = input_size
    shape = [-1 if dynamic_batch else batch_size, channels, *([-1, -1] if dynamic_size else [height, width])]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notices
        converted = ov.convert_model(wrapped, example_input=example_input(batch_size, input_size, 0),
                                     input=[ov.PartialShape(shape)])
    converted.inputs[0].get_tensor().set_names({"input"})
    for port, name in zip(converted.outputs, names):
        port.get_tensor().set_names({name})
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        scratch_folder = tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-")
    except OSError as error:  # name the file asked for, not the scratch folder beside it
        raise OSError(error.errno, error.strerror, str(path)) from error
    with scratch_folder as scratch:
        written = Path(scratch) / path.name
        ov.save_model(converted, str(written), compress_to_fp16=False)  # fp16 weights would not be exact
        os.replace(written.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(written, path)  # the graph last: an .xml on disk always has its weights
    result = ExportResult(path, "openvino", input_size, batch_size, dynamic_batch, dynamic_size, None,
                          time.perf_counter() - start)
    if check:
        compiled = shared_core().compile_model(str(path), "CPU", FP32_CONFIG)
        request = compiled.create_infer_request()

        def run(x: Tensor):
            results = request.infer({"input": x.numpy()})
            return [results[port] for port in compiled.outputs]

        try:
            result.checks = compare_outputs(
                reference, run, names, check_shapes(batch_size, input_size, dynamic_batch, dynamic_size), rtol
            )
        except ExportCheckError:
            for file in result.files:
                file.unlink(missing_ok=True)
            raise
    result.seconds = time.perf_counter() - start
    return result


class OpenVinoRunner:
    """OpenVINO on the folded graph, in fp32 or bf16.

    The graph is converted once, with a dynamic batch and image size, and cached on disk by a
    digest of the model's weights and layers. Calls whose (output, batch shape) ``shapes`` admits
    (the same bound and freezing as the torch backend's compiled shapes) get the graph compiled for
    the static shape of each chunk they run, which OpenVINO plans and runs faster; other calls run a
    dynamic compilation.
    """

    def __init__(self, folded: nn.Module, input_size: Sequence[int], precision: str, threads: int | None,
                 cache_dir: str | os.PathLike[str] | None, shapes: CompiledShapes):
        self.ov = import_openvino()
        self.core = shared_core()
        self.features = not hasattr(folded, "forward_head")  # features_only: the stage maps
        outputs = None if self.features else ("logits", "embedding")
        self.config: dict[str, Any] = (
            dict(FP32_CONFIG) if precision == "fp32" else {"INFERENCE_PRECISION_HINT": "bf16"}
        )
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = cache / "openvino" / f"{model_digest(folded)}-{'_'.join(outputs or ('maps',))}.xml"
        cached_entry([self.path, self.path.with_suffix(".bin")], lambda: export_openvino(
            folded, self.path, input_size=input_size, dynamic_batch=True, dynamic_size=True, outputs=outputs,
            fold=False))
        try:
            self.graph = self.core.read_model(str(self.path))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendError(f"OpenVINO could not read {self.path}: {error}") from error
        self.shapes = shapes
        self.requests: dict[tuple[int, ...] | None, Any] = {}  # input shape (None: dynamic) -> infer request

    def request_for(self, shape: tuple[int, ...], call: tuple[str, tuple[int, ...]]):
        """An infer request compiled for input ``shape`` when ``shapes`` admits the ``call`` it is
        part of, else the dynamic one."""
        key = shape if self.shapes.admit(call) else None
        request = self.requests.get(key)
        if request is None:
            graph = self.graph
            if key is not None:
                graph = graph.clone()
                graph.reshape({graph.inputs[0]: self.ov.PartialShape(list(shape))})
            request = self.requests[key] = self.core.compile_model(graph, "CPU", self.config).create_infer_request()
        return request

    def __call__(self, images: Tensor, output: str, call: tuple[str, tuple[int, ...]]) -> Tensor | list[Tensor]:
        """``output`` for ``images``, a chunk of a call of (output, batch shape) ``call``."""
        x = images.detach().float().cpu().contiguous().numpy()
        request = self.request_for(tuple(x.shape), call)
        results = request.infer({0: x})
        if self.features:
            return [torch.from_numpy(results[port]) for port in request.model_outputs]
        port = request.model_outputs[0 if output == "forward" else 1]
        return torch.from_numpy(results[port])
