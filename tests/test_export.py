"""ONNX and TorchScript export of the folded graph, each checked against the PyTorch model,
including a batch and an image size other than the export's."""

from __future__ import annotations

import pytest
import torch

from conftest import synthetic_model
from fastvit.runtime.export import ExportCheckError, export_model, export_onnx, export_torchscript
from synthetic_weights import synthetic_input

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'fastvit[onnx]'")
pytest.importorskip("onnx", reason="torch's ONNX exporter needs the onnx package: pip install 'fastvit[onnx]'")

RTOL = 1e-4


def run_onnx(path, x: torch.Tensor, outputs=None) -> list:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"input": x.numpy()})


def relative_error(actual, expected: torch.Tensor) -> float:
    return float((torch.as_tensor(actual) - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])  # sa12: attention and RepCPE
def test_onnx_dynamic_batch_and_size(name, tmp_path):
    model = synthetic_model(name)
    result = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(3, 128, 128), dynamic_batch=True,
                         dynamic_size=True)
    checked = {c.shape for c in result.checks}
    assert checked == {(1, 3, 128, 128), (3, 3, 128, 128), (2, 3, 97, 161)}  # other batch, other odd size
    assert result.max_relative_diff <= RTOL
    # And independently: another batch at another size than the export's.
    x = synthetic_input((4, 3, 160, 96), 3)
    with torch.no_grad():
        expected = model(x)
    (logits,) = run_onnx(result.path, x)
    assert relative_error(logits, expected) <= RTOL


def test_onnx_graph_is_inference_only(tmp_path):
    onnx = pytest.importorskip("onnx")
    result = export_onnx(synthetic_model("fastvit_sa12"), tmp_path / "sa12.onnx", input_size=(3, 64, 64),
                         dynamic_size=True)
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert not ops & {"BatchNormalization", "Dropout", "AveragePool", "GlobalAveragePool", "Loop", "If"}
    assert {"Conv", "MatMul", "Softmax", "ReduceMean"} <= ops


def test_onnx_embedding_output_and_fixed_shape(tmp_path):
    model = synthetic_model("fastvit_t8")
    result = export_onnx(model, tmp_path / "t8.onnx", input_size=(3, 96, 96), batch_size=2,
                         outputs=("logits", "embedding"))
    assert {c.output for c in result.checks} == {"logits", "embedding"}
    x = synthetic_input((2, 3, 96, 96))
    logits, embedding = run_onnx(result.path, x)
    with torch.no_grad():
        assert relative_error(embedding, model.forward_head(model.forward_features(x), pre_logits=True)) <= RTOL
        assert relative_error(logits, model(x)) <= RTOL


def test_export_fails_loudly_and_leaves_no_file(tmp_path):
    path = tmp_path / "t8.onnx"
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        export_onnx(synthetic_model("fastvit_t8"), path, input_size=(3, 64, 64), rtol=0.0)
    assert not path.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_round_trip(tmp_path):
    model = synthetic_model("fastvit_sa12")
    result = export_torchscript(model, tmp_path / "sa12.pt", input_size=(3, 96, 96))
    assert result.max_relative_diff <= RTOL and len(result.checks) == 3
    loaded = torch.jit.load(str(result.path))
    x = synthetic_input((2, 3, 64, 128), 4)
    with torch.no_grad():
        assert relative_error(loaded(x), model(x)) <= RTOL


def test_export_model_from_a_checkpoint(tmp_path):
    """What ``fastvit export NAME --checkpoint PATH --format onnx --dynamic-batch`` runs."""
    from safetensors.torch import save_file

    model = synthetic_model("fastvit_t8")
    checkpoint = tmp_path / "t8.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    result = export_model("fastvit_t8", "onnx", tmp_path / "out.onnx", checkpoint=str(checkpoint),
                          dynamic_batch=True, input_size=(3, 64, 64))
    assert result.path.exists() and result.dynamic_batch and result.max_relative_diff <= RTOL
    assert "max abs diff" in result.summary()
