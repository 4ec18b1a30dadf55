"""ONNX, OpenVINO IR and TorchScript export of the folded inference graph, each checked right after
writing.

:func:`export_onnx` writes the network as :func:`~fastvit.runtime.folds.fold_for_inference` leaves
it (eval only: BatchNorms, layer scales and train-time branches folded away; attention as plain
MatMul/Softmax; squeeze-excite and pooling as ReduceMean, so no input size is baked in), then
runs the file with onnxruntime next to the PyTorch model and raises :class:`ExportCheckError`
when they differ by more than ``rtol`` (1e-4) of the largest reference output. With a dynamic
batch or size the check also runs at a batch and a size other than the export's.
:func:`~fastvit.runtime.backends.openvino.export_openvino` converts the same graph to OpenVINO IR
(``pip install 'fastvit[openvino]'``) and checks it with OpenVINO's CPU plugin in fp32.
:func:`export_torchscript` traces the same graph and checks the reloaded file the same way.

The ONNX exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``):
in torch 2.13 it handles dynamic batch and spatial size for every variant, attention included,
in about a second and without extra packages. ``exporter='dynamo'`` selects the torch.export
based exporter (needs onnxscript); see the README for how the two compare.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import FastViTError
from ..files import replaced_atomically
from .options import check_input_size

__all__ = [
    "ExportCheckError",
    "ExportResult",
    "OptionalDependencyError",
    "check_onnx",
    "check_opset",
    "export_onnx",
    "export_torchscript",
    "import_onnxruntime",
]

DEFAULT_OPSET = 17
OPSETS = range(14, 24)
"""ONNX opsets the export takes: attention needs 14 or later, and torch 2.13 writes at most 23."""
FORMATS = ("onnx", "openvino", "torchscript")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}


class OptionalDependencyError(FastViTError, ImportError):
    """An optional package (onnxruntime, onnx, onnxscript, openvino) that a feature needs is not installed."""


class ExportCheckError(FastViTError):
    """An exported file whose outputs differ from the PyTorch model's beyond the tolerance."""


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise OptionalDependencyError(
            "onnxruntime is not installed; install the ONNX extra: pip install 'fastvit[onnx]'"
        ) from error
    return onnxruntime


@dataclass
class CheckResult:
    """One comparison of an exported file against the PyTorch model."""

    shape: tuple[int, ...]
    output: str
    max_abs_diff: float
    reference_absmax: float

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.reference_absmax, 1e-12)


@dataclass
class ExportResult:
    path: Path
    format: str
    input_size: tuple[int, ...]
    batch_size: int
    dynamic_batch: bool
    dynamic_size: bool
    opset: int | None
    seconds: float
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=float("nan"))

    @property
    def max_relative_diff(self) -> float:
        return max((c.relative for c in self.checks), default=float("nan"))

    @property
    def files(self) -> list[Path]:
        """What was written: the file, and for OpenVINO IR the weights (.bin) beside the graph (.xml)."""
        return [self.path, self.path.with_suffix(".bin")] if self.format == "openvino" else [self.path]

    def summary(self) -> str:
        size = sum(file.stat().st_size for file in self.files if file.exists()) / 2**20
        dims = "x".join(map(str, self.input_size[1:]))
        dynamic = ", ".join(n for n, on in (("batch", self.dynamic_batch), ("size", self.dynamic_size)) if on)
        lines = [f"wrote {self.path} ({self.format}{f', opset {self.opset}' if self.opset else ''}, {size:.1f} MiB, "
                 f"batch {self.batch_size} at {dims}{f', dynamic {dynamic}' if dynamic else ''}) in {self.seconds:.1f} s"]
        for check in self.checks:
            lines.append(f"  checked {check.output} at {tuple(check.shape)}: max abs diff {check.max_abs_diff:.2e} "
                         f"({check.relative:.1e} of max |output| {check.reference_absmax:.3g})")
        return "\n".join(lines)


class _Outputs(nn.Module):
    """The model with named outputs: 'logits', 'embedding' (pooled pre-logits), or the maps of a
    features_only model ('stage<i>')."""

    def __init__(self, model: nn.Module, outputs: Sequence[str]):
        super().__init__()
        self.model, self.outputs = model, tuple(outputs)

    def forward(self, x: Tensor):
        if self.outputs == ("logits",) or not hasattr(self.model, "forward_head"):
            return self.model(x)
        embedding = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        results = {"embedding": embedding, "logits": self.model.get_classifier()(embedding)}
        return tuple(results[name] for name in self.outputs)


def _output_names(model: nn.Module, outputs: Sequence[str] | None) -> tuple[str, ...]:
    if hasattr(model, "out_indices") and not hasattr(model, "forward_head"):  # features_only
        return tuple(f"stage{i}" for i in model.out_indices)
    outputs = tuple(outputs or ("logits",))
    unknown = set(outputs) - {"logits", "embedding"}
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; expected 'logits' and/or 'embedding'")
    return outputs


def prepare_graph(model: nn.Module, fold: bool, outputs: Sequence[str] | None) -> tuple[_Outputs, tuple[str, ...]]:
    """An eval, float32, NCHW copy of ``model`` (folded unless ``fold=False``) with named outputs."""
    from .folds import fold_for_inference

    model = fold_for_inference(model.eval()) if fold else copy.deepcopy(model).eval()
    model = model.float().cpu().to(memory_format=torch.contiguous_format)  # an NCHW trace: no transposes
    names = _output_names(model, outputs)
    return _Outputs(model, names).eval(), names


def example_input(batch: int, input_size: Sequence[int], seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *input_size, generator=generator)


def check_shapes(
    batch: int, input_size: Sequence[int], dynamic_batch: bool, dynamic_size: bool
) -> list[tuple[int, tuple[int, ...]]]:
    """The input shapes a check runs: the export's own, plus another batch and another odd size
    when those are dynamic."""
    c, h, w = input_size
    shapes = [(batch, (c, h, w))]
    if dynamic_batch:
        shapes.append((batch + 2, (c, h, w)))
    if dynamic_size:
        shapes.append((batch + 1 if dynamic_batch else batch, (c, h - 31 if h > 62 else h + 31, w + 33)))
    return shapes


def compare_outputs(
    reference: nn.Module, run, names: Sequence[str], shapes: Sequence[tuple[int, tuple[int, ...]]], rtol: float
) -> list[CheckResult]:
    wrapped = _Outputs(reference, names)
    checks = []
    for seed, (batch, size) in enumerate(shapes):
        x = example_input(batch, size, seed)
        with torch.inference_mode():
            expected = wrapped(x)
        expected = [expected] if isinstance(expected, Tensor) else list(expected)
        actual = run(x)
        for name, exp, act in zip(names, expected, actual):
            act = torch.as_tensor(act)
            if tuple(act.shape) != tuple(exp.shape):
                raise ExportCheckError(f"{name} at input {(batch, *size)}: shape {tuple(act.shape)}, expected "
                                       f"{tuple(exp.shape)}")
            checks.append(CheckResult((batch, *size), name, float((act - exp).abs().max()), float(exp.abs().max())))
    worst = max(checks, key=lambda c: c.relative)
    if not worst.relative <= rtol:
        raise ExportCheckError(
            f"exported {worst.output} at input {worst.shape} differs from PyTorch by {worst.max_abs_diff:.3g} "
            f"({worst.relative:.2e} of max |output|, tolerance {rtol:.0e})"
        )
    return checks


def check_onnx(
    path: str | os.PathLike[str],
    reference: nn.Module,
    shapes: Sequence[tuple[int, tuple[int, ...]]],
    outputs: Sequence[str] | None = None,
    rtol: float = 1e-4,
) -> list[CheckResult]:
    """Run ``path`` with onnxruntime at each (batch, (C, H, W)) in ``shapes`` and compare with
    ``reference`` (an eval-mode PyTorch model); raises :class:`ExportCheckError` beyond ``rtol``."""
    ort = import_onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()] if outputs is None else list(outputs)
    input_name = session.get_inputs()[0].name
    return compare_outputs(reference.eval(), lambda x: session.run(names, {input_name: x.numpy()}), names, shapes, rtol)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int] = (3, 256, 256),
    batch_size: int = 1,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    opset: int | None = None,
    outputs: Sequence[str] | None = ("logits",),
    fold: bool = True,
    check: bool = True,
    rtol: float = 1e-4,
    exporter: str = "torchscript",
) -> ExportResult:
    """Write ``model`` (eval, folded unless ``fold=False``) as ONNX and check it with onnxruntime.

    The graph has one input ``input`` (B, C, H, W) and the outputs named in ``outputs``
    ('logits', 'embedding'; a features_only model gives 'stage<i>'). ``dynamic_batch`` /
    ``dynamic_size`` make those dimensions symbolic. ``check`` needs onnxruntime.
    """
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"unknown exporter {exporter!r}; expected 'torchscript' or 'dynamo'")
    check_opset(opset)
    if check:
        import_onnxruntime()  # fail before spending time on the export
    start = time.perf_counter()
    reference = model.eval()
    wrapped, names = prepare_graph(model, fold, outputs)
    input_size = check_input_size(model, input_size, batch_size)
    example = example_input(batch_size, input_size, 0)
    opset = opset or DEFAULT_OPSET
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    input_axes = {**({0: "batch"} if dynamic_batch else {}), **({2: "height", 3: "width"} if dynamic_size else {})}
    output_axes = {0: "batch"} if dynamic_batch else {}
    if names and names[0].startswith("stage") and dynamic_size:
        output_axes = {**output_axes, 2: "out_height", 3: "out_width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notices of the TorchScript exporter and tracer
        if exporter == "torchscript":
            torch.onnx.export(
                wrapped, (example,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                output_names=list(names), do_constant_folding=True,
                dynamic_axes={"input": input_axes, **{n: output_axes for n in names}} if input_axes else None,
            )
        else:
            _export_dynamo(wrapped, example, path, names, opset, dynamic_batch, dynamic_size)
    result = ExportResult(path, "onnx", input_size, batch_size, dynamic_batch, dynamic_size,
                          opset if exporter == "torchscript" else max(opset, 18), time.perf_counter() - start)
    if check:
        try:
            shapes = check_shapes(batch_size, input_size, dynamic_batch, dynamic_size)
            result.checks = check_onnx(path, reference, shapes, names, rtol)
        except ExportCheckError:
            path.unlink(missing_ok=True)
            raise
    result.seconds = time.perf_counter() - start
    return result


def check_opset(opset: int | None) -> None:
    if opset is not None and opset not in OPSETS:
        raise ValueError(f"ONNX opset {opset} is not supported; choose one from {OPSETS[0]} to {OPSETS[-1]}")


def _export_dynamo(wrapped, example, path, names, opset, dynamic_batch, dynamic_size) -> None:
    if importlib.util.find_spec("onnxscript") is None:
        raise OptionalDependencyError("the dynamo ONNX exporter needs onnxscript: pip install 'fastvit[onnx]'")
    dim = torch.export.Dim
    shapes = {}
    if dynamic_batch:
        shapes[0] = dim("batch", min=1, max=4096)
    if dynamic_size:
        shapes[2], shapes[3] = dim("height", min=32, max=4096), dim("width", min=32, max=4096)
    program = torch.onnx.export(
        wrapped, (example,), dynamo=True, opset_version=max(opset, 18), input_names=["input"],
        output_names=list(names), dynamic_shapes=({**shapes},) if shapes else None, verbose=False,
    )
    program.optimize()
    program.save(str(path))


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int] = (3, 256, 256),
    batch_size: int = 1,
    outputs: Sequence[str] | None = ("logits",),
    fold: bool = True,
    check: bool = True,
    rtol: float = 1e-4,
) -> ExportResult:
    """Trace the folded ``model`` to TorchScript, save it, reload it and check it against
    ``model`` at the traced shape and at another batch and size (traced FastViTs take any)."""
    start = time.perf_counter()
    reference = model.eval()
    wrapped, names = prepare_graph(model, fold, outputs)
    input_size = check_input_size(model, input_size, batch_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13, not removed
        traced = torch.jit.trace(wrapped, example_input(batch_size, input_size, 0), check_trace=False)
        with replaced_atomically(path) as temporary, open(temporary, "wb") as file:  # OSError, not torch's RuntimeError
            torch.jit.save(traced, file)
    result = ExportResult(path, "torchscript", input_size, batch_size, True, True, None, time.perf_counter() - start)
    if check:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loaded = torch.jit.load(str(path)).eval()

        def run(x: Tensor):
            with torch.inference_mode():
                out = loaded(x)
            return [out] if isinstance(out, Tensor) else list(out)

        try:
            shapes = check_shapes(batch_size, input_size, True, True)
            result.checks = compare_outputs(reference, run, names, shapes, rtol)
        except ExportCheckError:
            path.unlink(missing_ok=True)
            raise
    result.seconds = time.perf_counter() - start
    return result
