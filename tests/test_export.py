"""ONNX, OpenVINO IR and TorchScript export of the folded graph, each checked against the PyTorch
model, including a batch and an image size other than the export's."""

from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch

import fastvit
from fastvit.cli.export import export_model
from fastvit.runtime.export import ExportCheckError, export_onnx, export_torchscript

from conftest import save_checkpoint, synthetic_model
from synthetic_weights import synthetic_input

RTOL = 1e-4
needs_onnx = pytest.mark.skipif(
    find_spec("onnxruntime") is None or find_spec("onnx") is None,
    reason="ONNX export and its check need onnx and onnxruntime: pip install 'fastvit[onnx]'",
)
needs_openvino = pytest.mark.skipif(find_spec("openvino") is None,
                                    reason="openvino not installed: pip install 'fastvit[openvino]'")


def run_onnx(path, x: torch.Tensor, outputs=None) -> list:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"input": x.numpy()})


def relative_error(actual, expected: torch.Tensor) -> float:
    return float((torch.as_tensor(actual) - expected).abs().max() / expected.abs().max())


@needs_onnx
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


@needs_onnx
def test_onnx_graph_is_inference_only(tmp_path):
    onnx = pytest.importorskip("onnx")
    result = export_onnx(synthetic_model("fastvit_sa12"), tmp_path / "sa12.onnx", input_size=(3, 64, 64),
                         dynamic_size=True)
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert not ops & {"BatchNormalization", "Dropout", "AveragePool", "GlobalAveragePool", "Loop", "If"}
    assert {"Conv", "MatMul", "Softmax", "ReduceMean"} <= ops


@needs_onnx
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


@needs_onnx
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


@needs_onnx
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


@needs_openvino
def test_openvino_ir_dynamic_batch_and_size(tmp_path):
    """What ``fastvit export fastvit_t8 --format openvino --dynamic-batch --dynamic-size`` runs: the
    IR (graph and weights) checked by OpenVINO at three shapes, and equal to the model at a fourth."""
    from fastvit.runtime.backends.openvino import export_openvino, shared_core

    checkpoint = save_checkpoint(tmp_path / "t8.safetensors")
    result = export_model("fastvit_t8", "openvino", tmp_path / "t8.xml", checkpoint=str(checkpoint),
                          dynamic_batch=True, dynamic_size=True, input_size=(3, 64, 64))
    assert [file.name for file in result.files] == ["t8.xml", "t8.bin"] and all(f.exists() for f in result.files)
    assert {c.shape for c in result.checks} == {(1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 33, 97)}
    assert result.max_relative_diff <= RTOL
    compiled = shared_core().compile_model(str(result.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = synthetic_input((2, 3, 96, 128), 5)
    with torch.no_grad():
        expected = synthetic_model("fastvit_t8")(x)
    assert relative_error(compiled(x.numpy())[0], expected) <= RTOL
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        export_openvino(synthetic_model("fastvit_t8"), tmp_path / "bad.xml", input_size=(3, 64, 64), rtol=0.0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t8.bin", "t8.safetensors", "t8.xml"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_small_images_and_bad_sizes(tmp_path):
    """A model takes images down to a few pixels, and the checks at another size stay valid for
    them; sizes no model takes are refused before anything is traced."""
    model = synthetic_model("fastvit_t8")
    result = export_torchscript(model, tmp_path / "t8.pt", input_size=(3, 16, 16))
    assert {c.shape for c in result.checks} == {(1, 3, 16, 16), (3, 3, 16, 16), (2, 3, 47, 49)} and result.max_relative_diff <= RTOL
    for input_size, batch_size in (((3, 0, 64), 1), ((1, 64, 64), 1), ((3, 64), 1), ((3, 64, 64), 0)):
        with pytest.raises(ValueError, match="input_size|batch_size"):
            export_torchscript(model, tmp_path / "bad.pt", input_size=input_size, batch_size=batch_size)
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_torch_jit_script_as_timms_models_allow(name):
    """torch.jit.script compiles the model, fused or not, features_only too (timm's FastViT scripts;
    ours failed on class annotations made strings by `from __future__ import annotations`)."""
    x = synthetic_input((2, 3, 64, 96))
    for model in (synthetic_model(name), synthetic_model(name, features_only=True)):
        for form in (model, fastvit.reparameterize(model)):
            scripted = torch.jit.script(form)
            with torch.no_grad():
                expected, actual = form(x), scripted(x)
            if isinstance(expected, torch.Tensor):
                expected, actual = [expected], [actual]
            assert all(torch.equal(ours, theirs) for ours, theirs in zip(expected, actual, strict=True))
