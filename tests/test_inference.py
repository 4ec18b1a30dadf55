"""The fast inference path: its extra folds are exact, every engine and schedule computes the
reference model's function, bf16 agrees with fp32 on real photos, and ``import fastvit`` stays light."""

from __future__ import annotations

import copy
import importlib.util
import os
import pickle
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import fastvit
import fastvit.runtime.predictor as predictor_module
from fastvit.data import create_transform, load_image, resolve_data_config
from fastvit.models.layers import AttentionBlock, LayerNorm2d, RepMixerBlock
from fastvit.runtime.folds import FoldedAttentionBlock, FoldedRepMixerBlock, RepeatedDepthwiseConv2d, fold_for_inference
from fastvit.runtime.onednn import OneDnnConv2d, OneDnnFusion, onednn_available
from fastvit.runtime.precision import PrecisionNotSupportedError, bf16_is_native
from fastvit.runtime.predictor import AUTO_COMPILE_CALLS, COMPILE_PAYBACK_CALLS, MAX_COMPILED_SHAPES, Predictor

from conftest import synthetic_model
from synthetic_weights import synthetic_input

RTOL = 1e-4
BF16_RTOL = 0.05
"""bf16 logits against fp32 ones, relative to the largest: bf16 keeps 8 bits of mantissa."""
IMAGES = Path(__file__).parent / "images"
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN fused conv ops")
needs_native_bf16 = pytest.mark.skipif(not bf16_is_native(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino not installed: pip install 'fastvit[openvino]'")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).abs().max() / expected.float().abs().max())


def reference(model: nn.Module, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True) if embed else model(x)


@torch.no_grad()
@pytest.mark.parametrize("name, kwargs", [
    ("fastvit_t8", {}),
    ("fastvit_sa12", {}),
    ("fastvit_mci0", {}),  # SE in the downsampling, GELU after the large-kernel conv
    ("fastvit_t8", {"num_classes": 0, "global_pool": "avgmax"}),
])
def test_folds_are_exact_in_float64(name, kwargs):
    """In float64 the folded network equals the reference to 1e-12: the folds are algebra, not
    approximations."""
    model = synthetic_model(name, **kwargs).double()
    folded = fold_for_inference(model)
    kinds = {type(m) for m in folded.modules()}
    assert FoldedRepMixerBlock in kinds and RepeatedDepthwiseConv2d in kinds
    assert (FoldedAttentionBlock in kinds) == (name != "fastvit_t8")
    assert not any(isinstance(m, (RepMixerBlock, AttentionBlock, nn.BatchNorm2d)) for m in folded.modules())
    x = synthetic_input((2, 3, 96, 80)).double()
    assert relative_error(folded(x), reference(model, x)) < 1e-12
    assert relative_error(folded.forward_head(folded.forward_features(x), pre_logits=True),
                          reference(model, x, embed=True)) < 1e-12


@torch.no_grad()
def test_layernorm_attention_keeps_its_norm():
    """mci3/4 use LayerNorm2d in attention, which cannot fold into qkv; it stays, exactly."""
    torch.manual_seed(0)
    block = AttentionBlock(64, norm_layer=partial(LayerNorm2d, eps=1e-5)).double().eval()
    for parameter in block.parameters():
        parameter.normal_(0.0, 0.3)
    folded = FoldedAttentionBlock.fold(block)
    assert isinstance(folded.norm, LayerNorm2d)
    x = torch.randn(2, 64, 5, 7, dtype=torch.float64)
    assert relative_error(folded(x), block(x)) < 1e-12


def test_fold_leaves_the_model_alone():
    model = synthetic_model("fastvit_t8")
    keys = list(model.state_dict())
    fold_for_inference(model)
    assert list(model.state_dict()) == keys


ENGINES = [pytest.param("onednn", marks=needs_onednn), "eager"]


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_predictor_matches_reference(name, engine, channels_last):
    model = synthetic_model(name)
    predictor = Predictor(model, engine=engine, channels_last=channels_last)
    for shape, seed in (((1, 3, 256, 256), 0), ((2, 3, 200, 232), 1)):
        x = synthetic_input(shape, seed)
        assert relative_error(predictor(x), reference(model, x)) <= RTOL
    assert relative_error(predictor.embed(x), reference(model, x, embed=True)) <= RTOL


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_run_stage_by_stage_and_in_parallel_streams(engine):
    """A batch large enough to be cut per stage and shared by two streams gives the same result
    as the reference, for every micro-batch schedule."""
    model = synthetic_model("fastvit_sa12")
    x = synthetic_input((9, 3, 96, 112), 2)
    expected = reference(model, x)
    scheduled = Predictor(model, engine=engine, input_size=(3, 256, 256), streams=2)
    assert scheduled.segment_batches and min(scheduled.segment_batches) < 9 < max(scheduled.segment_batches)
    assert relative_error(scheduled(x), expected) <= RTOL
    assert relative_error(scheduled.embed(x), reference(model, x, embed=True)) <= RTOL
    for micro_batch in (0, 1, 4):
        assert relative_error(Predictor(model, engine=engine, micro_batch=micro_batch, streams=1)(x), expected) <= RTOL
    assert torch.get_num_threads() >= 1  # the stream pool restored torch's own setting


def test_the_stem_hands_each_chunk_to_the_first_stage():
    """Stage by stage, the stem and the first stage run one chunk after the other, so the batch's
    largest activation, the stem's output, is never concatenated."""
    model = synthetic_model("fastvit_t8")
    predictor = Predictor(model, compile=False, streams=1)
    assert predictor.segment_batches  # measured now, on one image
    calls = []
    predictor.model.stem.register_forward_hook(lambda _m, _i, out: calls.append(("stem", out.shape[0])))
    predictor.model.stages[0].register_forward_hook(lambda _m, _i, out: calls.append(("stage", out.shape[0])))
    predictor(synthetic_input((6, 3, 256, 256), 0))
    pairs = list(zip(calls[::2], calls[1::2]))
    assert len(pairs) > 1 and len(calls) == 2 * len(pairs)
    for stem, stage in pairs:
        assert stem[0] == "stem" and stage == ("stage", stem[1])
    assert sum(images for (_, images), _ in pairs) == 6


def test_chunks_are_as_even_as_the_budget_allows():
    model = synthetic_model("fastvit_t8")
    predictor = Predictor(model, compile=False, streams=1, micro_batch=4)
    sizes = []
    predictor.model.stem.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[0]))
    x = synthetic_input((6, 3, 64, 64), 3)
    assert relative_error(predictor(x), reference(model, x)) <= RTOL
    assert sizes == [3, 3]


@needs_onednn
def test_onednn_engine_packs_weights_per_input_size():
    """oneDNN wants another weight layout for other map sizes (1×1 maps at a 32×32 input): each
    size gets its own packed copy instead of a reorder on every call."""
    model = synthetic_model("fastvit_t8")
    predictor = Predictor(model)
    for size in (256, 32, 96):
        x = synthetic_input((1, 3, size, size), size)
        assert relative_error(predictor(x), reference(model, x)) <= RTOL
    conv = next(m for m in predictor.model.modules() if isinstance(m, OneDnnConv2d))
    assert len(conv._packed) == 3


@needs_onednn
def test_onednn_engine_fuses_gelu_and_residual():
    predictor = Predictor(synthetic_model("fastvit_t8"))
    convs = [m for m in predictor.model.modules() if isinstance(m, OneDnnConv2d)]
    assert sum(c.attr == "gelu" for c in convs) >= 10  # every fc1 and every GELU-ended MobileOne block
    assert not any(isinstance(m, nn.GELU) for m in predictor.model.modules() if m is not predictor.model.final_conv.act)
    exported = predictor.model_for_export()  # the plain twin computes the same
    x = synthetic_input((1, 3, 128, 128))
    with torch.no_grad():
        assert relative_error(exported(x), predictor(x)) <= RTOL


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_features_only_model(backend, tmp_path):
    """The stage maps of a features_only model, from every backend, for a batch run in chunks."""
    pytest.importorskip({"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[backend])
    model = synthetic_model("fastvit_t8", features_only=True, out_indices=(0, 2, 3))
    x = synthetic_input((5, 3, 128, 96))
    with torch.no_grad():
        expected = model(x)
    predictor = Predictor(model, backend=backend, micro_batch=2, input_size=(3, 128, 96), cache_dir=tmp_path)
    maps = predictor(x)
    assert [m.shape for m in maps] == [e.shape for e in expected]
    assert max(relative_error(m, e) for m, e in zip(maps, expected)) <= RTOL
    with pytest.raises(ValueError, match="no pooled embedding"):
        predictor.embed(x)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_cached_graph_belongs_to_its_outputs_not_only_its_weights(backend, tmp_path):
    """Two features_only models with the same weights but other stages must not share a converted
    graph: the second would return the first one's maps."""
    pytest.importorskip(backend)
    x = synthetic_input((2, 3, 64, 64))
    for out_indices in ((0, 1, 2, 3), (1, 3)):
        model = synthetic_model("fastvit_t8", features_only=True, out_indices=out_indices)
        maps = Predictor(model, backend=backend, input_size=(3, 64, 64), cache_dir=tmp_path)(x)
        with torch.no_grad():
            assert [m.shape for m in maps] == [e.shape for e in model(x)]


@needs_onednn
def test_compiled_with_onednn_graph():
    model = synthetic_model("fastvit_sa12")
    predictor = Predictor(model, compile=True)
    x = synthetic_input((1, 3, 128, 128))
    assert relative_error(predictor(x), reference(model, x)) <= RTOL
    assert relative_error(predictor(x), reference(model, x)) <= RTOL  # the fused graph, after profiling runs
    assert not torch.jit.onednn_fusion_enabled()  # process-wide TorchScript state left as found


def test_a_predictor_refuses_pickling_and_copying_with_a_clear_error():
    """It used to fail on whichever of its lock, thread pool or sessions came first."""
    predictor = Predictor(synthetic_model("fastvit_t8"))
    for copied in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="a Predictor cannot be pickled or copied .* build a Predictor where"):
            copied(predictor)


def test_onednn_fusion_stays_on_while_any_thread_runs_and_ends_as_found():
    """Two threads inside at once: the first to leave used to switch the fuser off under the other,
    and the last restored what it had found on entering (on): the user's own TorchScript models got
    oneDNN fusion for the rest of the process."""
    inside, first_left = threading.Barrier(2), threading.Event()
    seen = []

    def first():
        with OneDnnFusion():
            inside.wait()
        first_left.set()

    def second():
        with OneDnnFusion():
            inside.wait()
            first_left.wait()
            seen.append(torch.jit.onednn_fusion_enabled())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [True]
    assert not torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)  # the user's own choice is kept too
    try:
        with OneDnnFusion(), OneDnnFusion(enabled=False):
            pass
        assert torch.jit.onednn_fusion_enabled()
    finally:
        torch.jit.enable_onednn_fusion(False)


@needs_onednn
def test_auto_compiles_a_shape_only_once_it_repeats():
    model = synthetic_model("fastvit_t8")
    predictor = Predictor(model)
    x = synthetic_input((1, 3, 96, 96))
    expected = reference(model, x)
    for _ in range(AUTO_COMPILE_CALLS - 1):
        assert relative_error(predictor(x), expected) <= RTOL
    assert not predictor.compiler.pieces  # a one-off or occasional shape never waits for the compiler
    for _ in range(3):
        assert relative_error(predictor(x), expected) <= RTOL
    assert predictor.compiler.pieces
    assert not torch.jit.onednn_fusion_enabled()


@needs_onednn
def test_compiled_shapes_are_bounded():
    """A caller sending many batch sizes (a dynamic batcher) gets at most MAX_COMPILED_SHAPES of them
    compiled; the others keep running, uncompiled, with the same results."""
    model = synthetic_model("fastvit_t8")
    predictor = Predictor(model, compile=True, input_size=(3, 64, 64), streams=1)
    for batch in range(1, MAX_COMPILED_SHAPES + 6):
        x = synthetic_input((batch, 3, 64, 64))
        assert relative_error(predictor(x), reference(model, x)) <= RTOL
    assert len(predictor.compiled_shapes) == MAX_COMPILED_SHAPES
    pieces = len(predictor.compiler.pieces)
    for batch in (17, 19):
        x = synthetic_input((batch, 3, 64, 64))
        assert relative_error(predictor(x), reference(model, x)) <= RTOL
    assert len(predictor.compiler.pieces) == pieces


@needs_onednn
def test_expected_calls_compile_a_long_run_up_front_and_never_a_short_one():
    model = synthetic_model("fastvit_t8")
    x = synthetic_input((2, 3, 64, 64))
    expected = reference(model, x)
    short = Predictor(model, input_size=(3, 64, 64), streams=1)
    short.expect(2, COMPILE_PAYBACK_CALLS - 1)
    for _ in range(AUTO_COMPILE_CALLS + 2):
        assert relative_error(short(x), expected) <= RTOL
    assert not short.compiler.pieces
    assert short(synthetic_input((3, 3, 64, 64))) is not None  # other shapes keep the auto rule
    long = Predictor(model, input_size=(3, 64, 64), streams=1)
    long.expect(2, COMPILE_PAYBACK_CALLS)
    assert long.compiled_shapes == [("forward", (2, 3, 64, 64))] and long.compiler.pieces  # before any call
    assert relative_error(long(x), expected) <= RTOL


STREAMS_SCRIPT = """
import os, sys, torch
sys.path[:0] = sys.argv[1:]
from conftest import synthetic_model
from synthetic_weights import synthetic_input
from fastvit.runtime.predictor import Predictor
torch.set_num_threads(2)
predictor = Predictor(synthetic_model("fastvit_t8"), compile=True, input_size=(3, 64, 64), streams=2)
predictor(synthetic_input((4, 3, 64, 64)))  # compiled and run on the caller's two threads
before = len(os.listdir("/proc/self/task"))
predictor(synthetic_input((8, 3, 64, 64)))  # two streams of 4 images, one thread each
print(len(os.listdir("/proc/self/task")) - before, sorted({key[-1] for key in predictor.compiler.pieces}))
"""


@needs_onednn
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_streams_compile_their_own_pieces():
    """A piece compiled on the caller's two threads and run on a one-thread stream would start a
    second OpenMP team in each stream, after which every oneDNN call of the process is slower
    (batch 1 of T8 went from 7 to 12 ms). The streams compile their own pieces: running a batch as
    two streams adds the two stream threads and nothing else."""
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", STREAMS_SCRIPT, str(tests), str(tests.parent / "src")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "2", result.stdout
    assert result.stdout.strip().endswith("[1, 2]"), result.stdout


PAGE_FAULTS_SCRIPT = """
import resource, sys, torch
import fastvit
predictor = fastvit.Predictor(fastvit.create_model("fastvit_t8"))
predictor.prepare([1])
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.randn(1, 3, 256, 256)
predictor(x)
before = faults()
for _ in range(20):
    predictor(x)
print((faults() - before) / 20)
"""


@needs_onednn
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_activations_are_not_faulted_in_again_on_every_call():
    """Left to its defaults, glibc may give a call's activations back to the system when they are
    freed, and every call faults them in again: in this process (batch 1 only, as a latency service
    runs) 1,480 page faults per call, and 12 ms instead of 7.7. The Predictor has malloc keep them."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_") and key != "GLIBC_TUNABLES"}
    result = subprocess.run([sys.executable, "-c", PAGE_FAULTS_SCRIPT], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 200


def test_malloc_settings_of_the_user_are_left_alone(monkeypatch):
    from fastvit.runtime import memory

    monkeypatch.setattr(memory, "_kept", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(128 << 10))
    assert memory.keep_freed_memory() is False


@needs_onednn
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_native_bf16)])
def test_prepare_compiles_the_given_batch_sizes_and_freezes_the_rest(precision):
    model = synthetic_model("fastvit_t8")
    predictor = Predictor(model, input_size=(3, 64, 64), precision=precision)  # compile="auto"
    tolerance = RTOL if precision == "fp32" else BF16_RTOL
    predictor.prepare([1, 4], outputs=("forward", "embed"))
    prepared = dict(predictor.compiler.pieces)
    assert predictor.compiled_shapes == [(output, (b, 3, 64, 64)) for output in ("embed", "forward") for b in (1, 4)]
    assert prepared  # compiled at once, not after AUTO_COMPILE_CALLS calls
    for _ in range(AUTO_COMPILE_CALLS + 1):  # another size repeats: it never reaches the compiler
        x = synthetic_input((3, 3, 64, 64))
        assert relative_error(predictor(x), reference(model, x)) <= tolerance
    x = synthetic_input((4, 3, 64, 64))
    assert relative_error(predictor.embed(x), reference(model, x, embed=True)) <= tolerance
    assert predictor.compiler.pieces == prepared
    with pytest.raises(ValueError):
        predictor.prepare(range(1, MAX_COMPILED_SHAPES + 2))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_the_models_own_channel_count_and_empty_batches(backend, tmp_path):
    """A model made with in_chans=1 keeps its weights' 3-channel config: the Predictor tunes for (and
    checks) 1-channel images all the same. An empty batch gives empty outputs of the right shapes
    (OpenVINO itself dies on one with SIGFPE)."""
    pytest.importorskip(backend)
    for kwargs in ({"in_chans": 1}, {"in_chans": 1, "features_only": True}):
        model = synthetic_model("fastvit_t8", **kwargs)
        predictor = Predictor(model, backend=backend, cache_dir=tmp_path)
        assert predictor.input_size == (1, 256, 256)
        predictor.prepare([1])
        x = synthetic_input((3, 1, 64, 64))
        with torch.no_grad():
            expected = model(x)
        out = predictor(x)
        for ours, theirs in zip(*((out, expected) if kwargs.get("features_only") else ([out], [expected]))):
            assert relative_error(ours, theirs) <= RTOL
        empty = predictor(x[:0])
        for ours, theirs in zip(*((empty, expected) if kwargs.get("features_only") else ([empty], [expected]))):
            assert ours.shape == (0, *theirs.shape[1:])
        with pytest.raises(ValueError, match=r"expected a \(B, 1, H, W\) batch"):
            predictor(synthetic_input((2, 3, 64, 64)))
        for not_a_batch in (Image.new("L", (64, 64)), x.numpy(), list(x)):
            with pytest.raises(TypeError, match="float tensor"):
                predictor(not_a_batch)
        for integers in (x.to(torch.uint8), x.to(torch.int64)):  # unnormalised pixels: not transformed
            with pytest.raises(TypeError, match="floating-point"):
                predictor(integers)
        with pytest.raises(ValueError, match="non-empty images"):
            predictor(x[:, :, :0])
    with pytest.raises(ValueError, match="C = 1"):
        Predictor(model, backend=backend, input_size=(3, 224, 224), cache_dir=tmp_path)


def test_bad_options_are_rejected():
    model = synthetic_model("fastvit_t8")
    for options in ({"precision": "fp16"}, {"backend": "tvm"}, {"engine": "xla"}, {"compile": "tensorrt"},
                    {"micro_batch": -1}, {"micro_batch": 2.5}, {"streams": 0}, {"threads": "4"},
                    {"input_size": (3, 0, 64)}, {"input_size": (3, 64)}, {"input_size": (3, 64.0, 64)}):
        with pytest.raises(ValueError):
            Predictor(model, **options)


def photo_batch(model: nn.Module) -> torch.Tensor:
    transform = create_transform(**resolve_data_config(model=model))
    return torch.stack([transform(load_image(path)) for path in sorted(IMAGES.iterdir())])


@pytest.fixture
def no_native_bf16(monkeypatch):
    """The Predictor sees a CPU without native bf16, whatever this one has."""
    monkeypatch.setattr(predictor_module, "bf16_is_native", lambda: False)


def test_bf16_is_refused_where_not_native(no_native_bf16):
    model = synthetic_model("fastvit_t8")
    for backend in ("torch", "openvino"):
        with pytest.raises(PrecisionNotSupportedError, match="no native bf16"):
            Predictor(model, precision="bf16", backend=backend)


def bf16_errors(predictor: Predictor, batch: torch.Tensor, fp32: torch.Tensor) -> tuple[float, float]:
    """Top-1 agreement of ``predictor`` with fp32 logits, and its largest logit change."""
    logits = predictor(batch)
    return float((logits.argmax(-1) == fp32.argmax(-1)).float().mean()), float((logits - fp32).abs().max())


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_emulated_bf16_agrees_with_fp32_on_photos(name, no_native_bf16, record_property):
    """bf16 numerics emulated at fp32 speed (every op's result rounded to bf16), on every machine:
    top-1 equals fp32's on every real photo and the logits move by a few per cent at most."""
    model = synthetic_model(name)
    batch = photo_batch(model)
    fp32 = Predictor(model)(batch)
    agreement, max_logit_error = bf16_errors(Predictor(model, precision="bf16", allow_emulated_bf16=True), batch, fp32)
    record_property("top1_agreement", agreement)
    record_property("max_logit_error", max_logit_error)
    assert agreement >= 0.99
    assert 0 < max_logit_error < 0.05 * float(fp32.abs().max())


@needs_native_bf16
def test_native_bf16_runs_the_onednn_engine_as_accurately_as_its_emulation(monkeypatch):
    """Native bf16 runs the fused oneDNN engine (then compiled): no less accurate than the emulated
    bf16 numerics, the same top-1 as fp32 on the real photos."""
    model = synthetic_model("fastvit_sa12")  # attention too
    batch = photo_batch(model)
    fp32 = Predictor(model)(batch)
    native, compiled = Predictor(model, precision="bf16"), Predictor(model, precision="bf16", compile=True)
    assert native.engine == "onednn" and native.compile == "auto"
    monkeypatch.setattr(predictor_module, "bf16_is_native", lambda: False)
    _, emulated_error = bf16_errors(Predictor(model, precision="bf16", allow_emulated_bf16=True), batch, fp32)
    for predictor in (native, compiled, compiled):  # the second compiled call runs the fused graph
        agreement, max_logit_error = bf16_errors(predictor, batch, fp32)
        assert agreement == 1.0 and 0 < max_logit_error < 1.5 * emulated_error
    assert compiled.compiler.pieces and not torch.jit.onednn_fusion_enabled()


def test_onnxruntime_backend(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'fastvit[onnx]'")
    model = synthetic_model("fastvit_sa12")
    predictor = Predictor(model, backend="onnxruntime", input_size=(3, 128, 128), cache_dir=tmp_path)
    x = synthetic_input((3, 3, 96, 128))
    assert relative_error(predictor(x), reference(model, x)) <= RTOL
    assert relative_error(predictor.embed(x), reference(model, x, embed=True)) <= RTOL
    cached = sorted((tmp_path / "onnx").glob("*.onnx"))
    assert len(cached) == 2  # one graph per image size: 128x128 (the tuned size) and 96x128
    Predictor(model, backend="onnxruntime", input_size=(3, 128, 128), cache_dir=tmp_path)  # reuses the file
    assert sorted((tmp_path / "onnx").glob("*.onnx")) == cached


def test_other_runtimes_get_a_large_batch_in_chunks(tmp_path):
    """ONNX Runtime and OpenVINO run the whole network on what they are given, so a batch of more
    than 8 images goes to them in even chunks of at most BACKEND_CHUNK_IMAGES (4; micro_batch=0:
    whole), joined in order."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'fastvit[onnx]'")
    model = synthetic_model("fastvit_t8")
    x = synthetic_input((10, 3, 64, 64))
    expected = reference(model, x)
    for micro_batch, batch, sizes in ((None, 10, [4, 3, 3]), (None, 8, [8]), (0, 10, [10]), (6, 10, [5, 5])):
        predictor = Predictor(model, backend="onnxruntime", input_size=(3, 64, 64), cache_dir=tmp_path,
                              micro_batch=micro_batch)
        runner, seen = predictor._runner, []
        predictor._runner = lambda images, output, call: seen.append(len(images)) or runner(images, output, call)
        assert relative_error(predictor(x[:batch]), expected[:batch]) <= RTOL
        assert seen == sizes


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    else:  # the same size, a run of bytes in the middle overwritten: weights a loader would not notice
        middle = len(data) // 2
        data[middle : middle + 2000] = bytes(range(256)) * 7 + bytes(208)
        path.write_bytes(data)


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_a_damaged_cache_entry_is_rebuilt(backend, tmp_path):
    """A cached graph whose files were truncated or overwritten on disk (a full disk, a killed copy,
    bit rot) is found by its recorded SHA-256 and rebuilt, never loaded: before, a truncated file
    failed in every later run and an overwritten one returned NaNs. The files are readable by other
    users of a shared cache."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'fastvit[onnx]'")
    model, x = synthetic_model("fastvit_t8"), synthetic_input((2, 3, 64, 64))
    expected = reference(model, x)
    Predictor(model, backend=backend, input_size=(3, 64, 64), cache_dir=tmp_path)
    folder = tmp_path / ("onnx" if backend == "onnxruntime" else "openvino")
    graphs = sorted(path for path in folder.iterdir() if path.suffix in (".onnx", ".bin", ".xml"))
    assert all(path.stat().st_mode & 0o044 == 0o044 for path in graphs)
    assert [path.name for path in folder.iterdir() if path.name.startswith(".")] == []  # no scratch left
    for damaged in graphs:
        for how in ("truncated", "overwritten"):
            _damage(damaged, how)
            predictor = Predictor(model, backend=backend, input_size=(3, 64, 64), cache_dir=tmp_path)
            assert relative_error(predictor(x), expected) <= RTOL, (damaged.name, how)


@pytest.fixture(scope="module")
def openvino_cache(tmp_path_factory):
    """One cache of converted graphs for the OpenVINO tests: each converts the same weights."""
    return tmp_path_factory.mktemp("openvino-cache")


@needs_openvino
def test_openvino_backend(openvino_cache):
    """OpenVINO runs the folded graph, converted once (cached by model digest, one graph for every
    batch and size): fp32 within 1e-4 of the model, a static compilation for each prepared shape,
    a dynamic one for the others."""
    model = synthetic_model("fastvit_sa12")  # attention and RepCPE
    predictor = Predictor(model, backend="openvino", input_size=(3, 128, 128), cache_dir=openvino_cache)
    x = synthetic_input((3, 3, 96, 128))
    assert relative_error(predictor(x), reference(model, x)) <= RTOL
    assert relative_error(predictor.embed(x), reference(model, x, embed=True)) <= RTOL
    cached = {path: path.stat().st_mtime_ns for path in (openvino_cache / "openvino").iterdir()}
    assert sorted(path.suffix for path in cached) == [".bin", ".sha256", ".xml"]
    again = Predictor(model, backend="openvino", input_size=(3, 128, 128), cache_dir=openvino_cache)
    assert {path: path.stat().st_mtime_ns for path in (openvino_cache / "openvino").iterdir()} == cached
    again.prepare([1, 2])
    assert again.compiled_shapes == [("forward", (1, 3, 128, 128)), ("forward", (2, 3, 128, 128))]
    static = synthetic_input((2, 3, 128, 128), 2)  # 16 tokens of attention: OpenVINO's snippets got them wrong
    assert relative_error(again(static), reference(model, static)) <= RTOL
    y = synthetic_input((5, 3, 128, 128), 1)
    assert relative_error(again(y), reference(model, y)) <= RTOL  # frozen: the dynamic compilation
    assert len(again.compiled_shapes) == 2


@needs_openvino
def test_openvino_backend_compiles_what_a_job_expects(openvino_cache):
    """The static compilations follow expect() as the torch backend's compiled shapes do: the
    expected shape when enough calls repay it, and no other afterwards."""
    model, x = synthetic_model("fastvit_t8"), synthetic_input((2, 3, 64, 64))
    short = Predictor(model, backend="openvino", input_size=(3, 64, 64), cache_dir=openvino_cache)
    short.expect(2, COMPILE_PAYBACK_CALLS - 1)
    assert relative_error(short(x), reference(model, x)) <= RTOL and short.compiled_shapes == []
    long = Predictor(model, backend="openvino", input_size=(3, 64, 64), cache_dir=openvino_cache)
    long.expect(2, COMPILE_PAYBACK_CALLS)
    long(x[:1])
    assert long.compiled_shapes == [("forward", (2, 3, 64, 64))]


@needs_openvino
@needs_native_bf16
def test_openvino_backend_in_bf16(openvino_cache):
    model = synthetic_model("fastvit_sa12")
    predictor = Predictor(model, backend="openvino", precision="bf16", input_size=(3, 128, 128),
                          cache_dir=openvino_cache)
    x = synthetic_input((2, 3, 128, 128))
    assert 0 < relative_error(predictor(x), reference(model, x)) <= BF16_RTOL
    fp32 = Predictor(model, backend="openvino", input_size=(3, 128, 128), cache_dir=openvino_cache)
    assert fp32._runner.core is predictor._runner.core  # one Core per process: see shared_core


def test_import_fastvit_stays_light():
    """``import fastvit`` (and every module of the package) pulls in none of the heavy optional
    machinery; the predictor imports it only when an option needs it."""
    heavy = ("onnxruntime", "onnx", "onnxscript", "openvino", "torch._dynamo", "torch._inductor", "torch.onnx",
             "sympy", "timm", "torchvision")
    code = (
        "import sys, importlib, pkgutil, fastvit\n"
        "for module in pkgutil.walk_packages(fastvit.__path__, 'fastvit.'):\n"
        "    if not module.name.endswith('__main__'):\n"
        "        importlib.import_module(module.name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m.startswith({heavy!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api():
    assert callable(Predictor.from_pretrained)
    assert "fastvit_t8" in fastvit.list_models()
