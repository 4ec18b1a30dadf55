"""``fastvit export``: the fused model as ONNX, OpenVINO IR or TorchScript, checked against PyTorch after writing."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..runtime.export import FORMATS, ExportResult
from .common import image_side, positive


def export_model(
    name: str,
    format: str = "onnx",
    out: str | os.PathLike[str] | None = None,
    *,
    checkpoint: str | None = None,
    pretrained: bool = True,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    opset: int | None = None,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
    outputs: Sequence[str] | None = ("logits",),
    **model_kwargs: Any,
) -> ExportResult:
    """``fastvit export NAME``: build the model (pretrained weights, or ``checkpoint``), export
    it in ``format`` ('onnx', 'openvino' or 'torchscript') to ``out`` (default ``NAME.onnx``,
    ``NAME.xml`` or ``NAME.pt``) and check the file."""
    from ..models.registry import create_model
    from ..runtime.backends.openvino import export_openvino
    from ..runtime.export import SUFFIXES, check_opset, export_onnx, export_torchscript
    from ..runtime.options import input_size_of

    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    check_opset(opset)
    model = create_model(name, pretrained=pretrained and checkpoint is None, checkpoint_path=checkpoint,
                         **model_kwargs).eval()
    size = input_size_of(model, input_size, model.pretrained_cfg)
    out = Path(out) if out else Path(f"{name}{SUFFIXES[format]}")
    if format == "onnx":
        return export_onnx(model, out, input_size=size, batch_size=batch_size, dynamic_batch=dynamic_batch,
                           dynamic_size=dynamic_size, opset=opset, outputs=outputs)
    if format == "openvino":
        return export_openvino(model, out, input_size=size, batch_size=batch_size, dynamic_batch=dynamic_batch,
                               dynamic_size=dynamic_size, outputs=outputs)
    return export_torchscript(model, out, input_size=size, batch_size=batch_size, outputs=outputs)


def cmd_export(args: argparse.Namespace) -> None:
    result = export_model(
        args.model, args.format, args.out, checkpoint=args.checkpoint, dynamic_batch=args.dynamic_batch,
        dynamic_size=args.dynamic_size, opset=args.opset, batch_size=args.batch_size,
        input_size=(3, *args.input_size) if args.input_size else None,
    )
    print(result.summary())


def add_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="export the fused model to ONNX, OpenVINO IR or TorchScript",
        description="Export the reparameterized (fused) eval model and check the file against PyTorch right after "
        "writing (ONNX with onnxruntime: pip install 'fastvit[onnx]'; OpenVINO IR with OpenVINO: pip install "
        "'fastvit[openvino]'); fails above 1e-4 relative difference.",
    )
    export.add_argument("model", help="model name or name.tag")
    export.add_argument("--checkpoint", metavar="PATH", help="local weights instead of the pretrained ones")
    export.add_argument("--format", choices=FORMATS, default="onnx",
                        help="default onnx; openvino writes NAME.xml (the graph) and NAME.bin (the weights)")
    export.add_argument("--dynamic-batch", action="store_true", help="any batch size (ONNX, OpenVINO)")
    export.add_argument("--dynamic-size", action="store_true", help="any image height and width (ONNX, OpenVINO)")
    export.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    export.add_argument("--input-size", nargs=2, type=image_side, metavar=("H", "W"), help="default: the model's own")
    export.add_argument("--batch-size", type=positive, default=1, help="batch of the traced example (default 1)")
    export.add_argument("--out", metavar="FILE", help="default NAME.onnx, NAME.xml or NAME.pt")
    export.set_defaults(run=cmd_export)
