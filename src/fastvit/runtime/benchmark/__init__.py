"""The one-run speed comparison behind ``fastvit benchmark``: our inference paths against timm, ONNX
Runtime and the machine's matmul peak, on the same weights, each path in its own worker process.

:mod:`.runner` orchestrates the run, :mod:`.worker` is the process that measures one path, and
:mod:`.report` turns the results into the table.
"""

from .runner import DEFAULT_PATHS, PATHS, run_benchmark

__all__ = ["DEFAULT_PATHS", "PATHS", "run_benchmark"]
