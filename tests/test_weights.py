"""Pretrained weights: Hub cache and offline mode, every published layout, strict loading, safety.

Everything runs offline. Hub repos are laid out in a temporary cache exactly as huggingface_hub
writes them and filled with the synthetic weights the golden files were made with, so a load
through the Hub path must reproduce timm's golden logits. Apple-format files are checked against
the outputs of Apple's own code (tests/golden/apple_*, from scripts/make_golden_apple.py).
Most checks compare weights bit for bit instead of running the model: identical tensors give
identical outputs, and a forward pass is the slow part.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import fastvit
from apple_layout import (
    network_indices,
    read_key_list,
    synthetic_apple_state_dict,
    to_apple,
    to_mobileclip_v1,
    to_open_clip,
)
from conftest import synthetic_model
from fastvit.errors import CheckpointError, WeightsUnavailableError
from fastvit.models.hub import hub_reachable
from fastvit.models.network import FastVitFeatures
from fastvit.models.weights import load_weights
from synthetic_weights import synthetic_input
from test_parity import RTOL, load_golden, relative_error

GOLDEN = Path(__file__).parent / "golden"
T8_REPO = "timm/fastvit_t8.apple_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
X = synthetic_input((1, 3, 256, 256), seed=0)
"""The 256×256 input of the golden files."""


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def t8() -> torch.nn.Module:
    """fastvit_t8 with the synthetic weights of the golden files."""
    return synthetic_model("fastvit_t8")


@pytest.fixture(scope="module")
def t8_state(t8) -> dict[str, torch.Tensor]:
    return t8.state_dict()


@pytest.fixture(scope="module")
def mci0() -> torch.nn.Module:
    return synthetic_model("fastvit_mci0")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty huggingface_hub cache, offline. huggingface_hub reads its environment once, at
    import, so its constants are patched too (test_env_vars_in_a_fresh_process covers the
    variables themselves)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def blob_name(filename: str, data: bytes) -> str:
    """The Hub's etag, which names the cached blob: the sha256 of an LFS file (weights), else
    the git blob sha1."""
    if filename.endswith((".safetensors", ".bin")):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_repo(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, ref: str | None = "main"
) -> None:
    """A repo snapshot as huggingface_hub caches it: blobs/<etag>, snapshots/<commit>/<file>
    linking to its blob, refs/<ref> holding the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for filename, data in files.items():
        blob = repo / "blobs" / blob_name(filename, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def hub_config(architecture: str, num_classes: int = 1000, **pretrained_cfg) -> bytes:
    """A config.json as timm's Hub repos carry it (their first_conv is often null)."""
    cfg = dict(
        tag="apple_in1k", custom_load=False, input_size=[3, 256, 256], fixed_input_size=False,
        interpolation="bicubic", crop_pct=0.9, crop_mode="center", mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225], num_classes=num_classes, pool_size=[8, 8], first_conv=None,
        classifier="head.fc",
    )
    cfg.update(pretrained_cfg)
    config = dict(architecture=architecture, num_classes=num_classes, num_features=768, pretrained_cfg=cfg)
    return json.dumps(config).encode()


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch(path: Path, obj: object) -> Path:
    path.write_bytes(torch_bytes(obj))
    return path


def save_safetensors(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    path.write_bytes(safetensors_bytes(state_dict))
    return path


@torch.no_grad()
def logits(model: torch.nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    return model.eval()(x)


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    """Same keys in the same order, and every tensor bit for bit."""
    state = model.state_dict()
    assert list(state) == list(expected)
    different = [key for key in state if not torch.equal(state[key], expected[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# ----------------------------------------------------------------------------------------------
# Hub: cache layout, offline mode, fallback, revisions, hf-hub: names, environment
# ----------------------------------------------------------------------------------------------


def test_hub_cache_loads_offline_and_matches_timm(hub_cache, t8_state):
    write_hub_repo(hub_cache, T8_REPO, {"model.safetensors": safetensors_bytes(t8_state)})
    model = fastvit.create_model("fastvit_t8.apple_in1k", pretrained=True)
    assert_same_weights(model, t8_state)
    assert relative_error(load_golden("fastvit_t8"), "256.unfused.logits", logits(model)) <= RTOL


def test_bare_name_takes_the_default_tag(hub_cache, t8_state):
    write_hub_repo(hub_cache, T8_REPO, {"model.safetensors": safetensors_bytes(t8_state)})
    model = fastvit.create_model("fastvit_t8", pretrained=True)
    assert model.pretrained_cfg["tag"] == "apple_in1k"
    assert_same_weights(model, t8_state)


def test_pytorch_model_bin_fallback_without_bn_counters(hub_cache, t8_state):
    """A repo with only pytorch_model.bin, whose BatchNorms lack num_batches_tracked (older exports)."""
    state = {k: v for k, v in t8_state.items() if not k.endswith("num_batches_tracked")}
    write_hub_repo(hub_cache, T8_REPO, {"pytorch_model.bin": torch_bytes(state)})
    assert_same_weights(fastvit.create_model("fastvit_t8", pretrained=True), t8_state)


def test_revisions(hub_cache, t8_state):
    """main holds the synthetic weights; another commit, also tagged v2, other classifier biases."""
    other = dict(t8_state, **{"head.fc.bias": t8_state["head.fc.bias"] + 1.0})
    write_hub_repo(hub_cache, T8_REPO, {"model.safetensors": safetensors_bytes(t8_state)})
    other_files = {"model.safetensors": safetensors_bytes(other), "config.json": hub_config("fastvit_t8")}
    write_hub_repo(hub_cache, T8_REPO, other_files, OTHER_COMMIT, ref="v2")

    assert_same_weights(fastvit.create_model("fastvit_t8", pretrained=True), t8_state)
    for overlay in (dict(hf_hub_revision=OTHER_COMMIT), dict(hf_hub_revision="v2"), dict(hf_hub_id=f"{T8_REPO}@v2")):
        assert_same_weights(fastvit.create_model("fastvit_t8", pretrained=True, pretrained_cfg_overlay=overlay), other)
    assert_same_weights(fastvit.create_model(f"hf-hub:{T8_REPO}@{OTHER_COMMIT}", pretrained=True), other)


def test_hf_hub_name_reads_the_repo_config(hub_cache, t8_state):
    files = {"config.json": hub_config("fastvit_t8", crop_pct=0.95), "model.safetensors": safetensors_bytes(t8_state)}
    write_hub_repo(hub_cache, T8_REPO, files)
    model = fastvit.create_model(f"hf-hub:{T8_REPO}", pretrained=True)
    assert_same_weights(model, t8_state)
    cfg = model.pretrained_cfg
    assert cfg["crop_pct"] == 0.95 and cfg["input_size"] == (3, 256, 256)  # the repo's values win
    assert cfg["first_conv"] == ("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv")  # null there: ours
    assert cfg["hf_hub_id"] == T8_REPO and cfg["source"] == "hf-hub"


def test_hf_hub_name_of_unlisted_weights_takes_their_num_classes(hub_cache, t8_state):
    """A fine-tune we do not list: its config sets the architecture and the classifier size."""
    state = dict(t8_state, **{key: t8_state[key][:10] for key in ("head.fc.weight", "head.fc.bias")})
    files = {
        "config.json": hub_config("fastvit_t8", num_classes=10, tag=None),
        "model.safetensors": safetensors_bytes(state),
    }
    write_hub_repo(hub_cache, "someone/fastvit-flowers", files)
    model = fastvit.create_model("hf-hub:someone/fastvit-flowers", pretrained=True)
    assert model.num_classes == 10
    assert_same_weights(model, state)
    assert model.pretrained_cfg["metrics"] == {}


def test_offline_with_nothing_cached_says_how_to_load_a_file(hub_cache):
    with pytest.raises(WeightsUnavailableError) as error:
        fastvit.create_model("fastvit_t8.apple_in1k", pretrained=True)
    message = str(error.value)
    assert isinstance(error.value, CheckpointError)
    assert T8_REPO in message and "offline" in message and str(hub_cache) in message
    assert "checkpoint_path=" in message and "--checkpoint" in message


@pytest.fixture
def online_hub(hub_cache, monkeypatch):
    """Online mode, no proxy, and the Hub's address a local port: ``listening`` opens it."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    server = socket.create_server(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()  # the port is closed now: connections are refused
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    hub_reachable.cache_clear()
    yield endpoint
    hub_reachable.cache_clear()


def test_unreachable_hub_fails_at_once_without_retries(online_hub, monkeypatch):
    """huggingface_hub retries a request to an unreachable Hub for about 25 s, logging each retry,
    before it gives up: a refused connection is found first, and the cache alone asked."""
    asked = []
    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *args, **kwargs: asked.append(kwargs["local_files_only"]) or real(*args, **kwargs))
    with pytest.raises(WeightsUnavailableError, match="the Hub cannot be reached and the local cache"):
        fastvit.create_model("fastvit_t8.apple_in1k", pretrained=True)
    assert asked == [True, True]
    assert not hub_reachable(online_hub)
    with socket.create_server(("127.0.0.1", int(online_hub.rsplit(":", 1)[1]))):
        assert hub_reachable.__wrapped__(online_hub)
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert hub_reachable.__wrapped__(online_hub)  # behind a proxy, the proxy reaches the Hub


def test_cached_weights_load_with_the_hub_unreachable(online_hub, hub_cache, t8_state):
    write_hub_repo(hub_cache, T8_REPO, {"model.safetensors": safetensors_bytes(t8_state)})
    assert_same_weights(fastvit.create_model("fastvit_t8", pretrained=True), t8_state)


def test_offline_hf_hub_name_with_nothing_cached(hub_cache):
    with pytest.raises(WeightsUnavailableError, match="config.json of Hugging Face Hub repo 'someone/absent'"):
        fastvit.create_model("hf-hub:someone/absent")


def test_cache_dir_argument(hub_cache, tmp_path, t8_state):
    """timm's cache_dir: another huggingface_hub cache than HF_HUB_CACHE."""
    write_hub_repo(tmp_path / "elsewhere", T8_REPO, {"model.safetensors": safetensors_bytes(t8_state)})
    model = fastvit.create_model("fastvit_t8", pretrained=True, cache_dir=tmp_path / "elsewhere")
    assert_same_weights(model, t8_state)


@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
def test_env_vars_in_a_fresh_process(variable, tmp_path, t8_state):
    """HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE, as huggingface_hub itself reads them at import."""
    root = tmp_path / "hf"
    cache = root / "hub" if variable == "HF_HOME" else root
    write_hub_repo(cache, T8_REPO, {"model.safetensors": safetensors_bytes(t8_state)})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update({variable: str(root), "HF_HUB_OFFLINE": "1"})
    script = textwrap.dedent(f"""
        import torch, fastvit
        model = fastvit.create_model("fastvit_t8", pretrained=True)
        torch.save(model.state_dict(), {str(tmp_path / "loaded.pth")!r})
    """)
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    loaded = torch.load(tmp_path / "loaded.pth", weights_only=True)
    assert list(loaded) == list(t8_state) and all(torch.equal(loaded[k], t8_state[k]) for k in loaded)


# ----------------------------------------------------------------------------------------------
# Local files: suffixes, wrappers, prefixes; fused weights; inference_mode; features_only
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pth.tar", ".pt", ".bin"])
def test_local_file_suffixes(suffix, tmp_path, t8_state):
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(safetensors_bytes(t8_state) if suffix == ".safetensors" else torch_bytes(t8_state))
    assert_same_weights(fastvit.create_model("fastvit_t8", checkpoint_path=path), t8_state)
    overlay = fastvit.create_model("fastvit_t8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert_same_weights(overlay, t8_state)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: {"state_dict": sd, "epoch": 3}, id="state_dict"),
        pytest.param(lambda sd: {"model": sd}, id="model"),
        pytest.param(lambda sd: {"state_dict_ema": sd, "state_dict": {k: v * 0 for k, v in sd.items()}}, id="ema"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="module."),
        pytest.param(lambda sd: {f"_orig_mod.module.{k}": v for k, v in sd.items()}, id="_orig_mod.module."),
    ],
)
def test_wrapped_checkpoints(wrap, tmp_path, t8_state):
    path = save_torch(tmp_path / "checkpoint.pth.tar", wrap(t8_state))
    assert_same_weights(fastvit.create_model("fastvit_t8", checkpoint_path=path), t8_state)


@pytest.mark.parametrize("inference_mode", [False, True])
def test_fused_checkpoint_folds_the_model(inference_mode, tmp_path, t8, caplog):
    fused = fastvit.reparameterize(t8).state_dict()
    path = save_torch(tmp_path / "fused.pth", fused)
    with caplog.at_level(logging.INFO, logger="fastvit"):
        model = fastvit.create_model("fastvit_t8", checkpoint_path=path, inference_mode=inference_mode)
    assert_same_weights(model, fused)
    assert "reparameterized (fused) weights: folding the model" in caplog.text


def test_unfused_checkpoint_into_inference_mode(tmp_path, t8, t8_state):
    path = save_safetensors(tmp_path / "t8.safetensors", t8_state)
    model = fastvit.create_model("fastvit_t8", checkpoint_path=path, inference_mode=True)
    assert_same_weights(model, fastvit.reparameterize(t8).state_dict())


def test_unfused_weights_into_a_folded_model_are_refused(t8_state):
    with torch.device("meta"):
        folded = fastvit.create_model("fastvit_t8", inference_mode=True)
    with pytest.raises(CheckpointError, match="unfused"):
        load_weights(folded, t8_state)


def test_features_only_with_pretrained_weights(hub_cache, t8, t8_state, caplog):
    write_hub_repo(hub_cache, T8_REPO, {"model.safetensors": safetensors_bytes(t8_state)})
    with caplog.at_level(logging.INFO, logger="fastvit"):
        features = fastvit.create_model("fastvit_t8", pretrained=True, features_only=True)
    assert_same_weights(features, FastVitFeatures(t8).state_dict())
    assert "the model has no classifier" in caplog.text


# ----------------------------------------------------------------------------------------------
# Apple's checkpoints (ml-fastvit) and the MobileCLIP / OpenCLIP image towers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["unfused", "fused"])
@pytest.mark.parametrize("variant", ["t8", "sa12"])
def test_apple_inverse_mapping_gives_apples_key_lists(variant, form):
    with torch.device("meta"):
        model = fastvit.create_model(f"fastvit_{variant}")
    state = model.state_dict() if form == "unfused" else fastvit.reparameterize(model).state_dict()
    ours = sorted((key, tuple(value.shape)) for key, value in to_apple(state).items())
    assert ours == sorted(read_key_list(GOLDEN / f"apple_fastvit_{variant}_{form}.txt"))


def test_apple_network_indices_of_an_attention_variant():
    with torch.device("meta"):
        keys = fastvit.create_model("fastvit_sa12").state_dict()
    assert network_indices(keys) == {
        (0, "blocks"): 0, (1, "downsample"): 1, (1, "blocks"): 2, (2, "downsample"): 3, (2, "blocks"): 4,
        (3, "downsample"): 5, (3, "pos_emb"): 6, (3, "blocks"): 7,
    }


@pytest.mark.parametrize("variant", ["t8", "sa12"])
def test_apple_layout_round_trip_is_exact(variant, tmp_path):
    """Our weights written in Apple's layout, unfused and fused, load back bit for bit."""
    model = synthetic_model(f"fastvit_{variant}")
    for form, reference in (("unfused", model), ("fused", fastvit.reparameterize(model))):
        state = reference.state_dict()
        path = save_torch(tmp_path / f"fastvit_{variant}_{form}.pth.tar", {"state_dict": to_apple(state)})
        assert_same_weights(fastvit.create_model(f"fastvit_{variant}", checkpoint_path=path), state)


@pytest.mark.parametrize("variant", ["t8", "sa12"])
def test_apple_checkpoints_match_apples_own_code(variant, tmp_path):
    """An Apple training checkpoint (argparse args, optimizer state, weights under 'state_dict'),
    seeded by Apple's key names, gives the logits of Apple's model. Folded by us and saved in
    Apple's fused layout, it holds Apple's fused tensors and gives Apple's fused logits."""
    golden = np.load(GOLDEN / f"apple_fastvit_{variant}.npz")
    name = f"fastvit_{variant}"
    checkpoint = {
        "epoch": 300,
        "arch": name,
        "state_dict": synthetic_apple_state_dict(read_key_list(GOLDEN / f"apple_{name}_unfused.txt")),
        "optimizer": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(model=name, lr=1e-3, input_size=[3, 256, 256]),
        "version": 2,
    }
    model = fastvit.create_model(name, checkpoint_path=save_torch(tmp_path / f"{name}.pth.tar", checkpoint))

    apple_fused = to_apple(fastvit.reparameterize(model).state_dict())
    fused_tensors = [apple_fused[key].double() for key, _ in read_key_list(GOLDEN / f"apple_{name}_fused.txt")]
    np.testing.assert_allclose([float(t.sum()) for t in fused_tensors], golden["fused.sum"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([float(t.abs().sum()) for t in fused_tensors], golden["fused.abs_sum"], rtol=1e-5)
    fused_path = save_torch(tmp_path / f"{name}_reparam.pth.tar", {"state_dict": apple_fused})
    fused = fastvit.create_model(name, checkpoint_path=fused_path)

    x = synthetic_input(tuple(golden["input_shape"]), int(golden["input_seed"]))
    for form, net in (("unfused", model), ("fused", fused)):
        reference = golden[f"{form}.logits"]
        error = np.abs(logits(net, x).numpy() - reference).max() / np.abs(reference).max()
        assert error <= 1e-5, f"{name} {form}: relative error {error:.2e}"


def test_mobileclip_v1_image_tower(mci0, tmp_path):
    """Apple's MobileCLIP .pt: a flat CLIP state dict, the tower under image_encoder.model. in
    Apple's layout, its projection a bias-free head.proj matrix (timm's weights: the golden ones)."""
    path = save_torch(tmp_path / "mobileclip_s0.pt", to_mobileclip_v1(mci0.state_dict()))
    model = fastvit.create_model("fastvit_mci0", checkpoint_path=path)
    assert_same_weights(model, dict(mci0.state_dict(), **{"head.fc.bias": torch.zeros(512)}))


def test_mobileclip_v1_checkpoint_matches_apples_own_code(tmp_path):
    """A MobileCLIP .pt seeded by the key names of Apple's own image tower (ml-mobileclip's
    ``MCi``) gives the embeddings of Apple's model, unfused and folded."""
    golden = np.load(GOLDEN / "apple_mobileclip_mci0.npz")
    tower = synthetic_apple_state_dict(read_key_list(GOLDEN / "apple_mobileclip_mci0.txt"))
    checkpoint = {f"image_encoder.{key}": value for key, value in tower.items()}
    checkpoint.update({"text_encoder.embedding_layer.weight": torch.zeros(8, 4), "logit_scale": torch.tensor(4.6)})
    model = fastvit.create_model("fastvit_mci0", checkpoint_path=save_torch(tmp_path / "mobileclip_s0.pt", checkpoint))

    x = synthetic_input(tuple(golden["input_shape"]), int(golden["input_seed"]))
    for form, net in (("unfused", model), ("fused", fastvit.reparameterize(model))):
        reference = golden[f"{form}.embedding"]
        error = np.abs(logits(net, x).numpy() - reference).max() / np.abs(reference).max()
        assert error <= 1e-5, f"mci0 {form}: relative error {error:.2e}"


@pytest.mark.parametrize("ddp", [True, False])
def test_open_clip_image_tower(ddp, mci0, tmp_path):
    path = save_torch(tmp_path / "open_clip_pytorch_model.bin", to_open_clip(mci0.state_dict(), ddp=ddp))
    assert_same_weights(fastvit.create_model("fastvit_mci0", checkpoint_path=path), mci0.state_dict())


# ----------------------------------------------------------------------------------------------
# Adapting and refusing
# ----------------------------------------------------------------------------------------------


def test_wrong_variant_names_the_keys(tmp_path):
    with torch.device("meta"):
        sa12 = fastvit.create_model("fastvit_sa12").state_dict()
    path = save_torch(tmp_path / "sa12.pth", {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in sa12.items()})
    with pytest.raises(CheckpointError) as error:
        fastvit.create_model("fastvit_t8", checkpoint_path=path)
    message = str(error.value)
    assert message.startswith(f"{path} does not fit fastvit_t8: ")
    assert "40 missing keys: stages.3.blocks.0.token_mixer.norm.identity.weight" in message  # t8's RepMixers
    assert "90 unexpected keys: stages.2.blocks.4." in message  # sa12 has six stage-2 blocks, t8 four
    assert ("351 keys of another shape (checkpoint vs model): "
            "stem.0.conv_kxk.0.conv.weight (64, 3, 3, 3) vs (48, 3, 3, 3)") in message
    assert "and 347 more" in message  # long lists are cut


def test_num_classes_drops_the_classifier_with_a_note(tmp_path, t8, t8_state, caplog):
    path = save_safetensors(tmp_path / "t8.safetensors", t8_state)
    with caplog.at_level(logging.INFO, logger="fastvit"):
        model = fastvit.create_model("fastvit_t8", checkpoint_path=path, num_classes=10)
    assert "head.fc has 1000 classes and the model 10" in caplog.text
    weight = model.head.fc.weight.detach()
    assert weight.shape == (10, 768) and weight.device.type == "cpu"
    assert 0.01 < float(weight.std()) < 0.03  # a fresh trunc_normal(std=0.02) init, not a leftover
    assert_same_weights(model.stages, t8.stages.state_dict())


def test_a_fine_tuned_checkpoint_brings_its_own_num_classes(tmp_path, t8, t8_state):
    """Without num_classes the model takes the checkpoint's classifier: 10 classes, or none."""
    tuned = dict(t8_state, **{"head.fc.weight": t8_state["head.fc.weight"][:10], "head.fc.bias": t8_state["head.fc.bias"][:10]})
    model = fastvit.create_model("fastvit_t8", checkpoint_path=save_safetensors(tmp_path / "tuned.safetensors", tuned))
    assert model.num_classes == 10
    torch.testing.assert_close(logits(model, X[:, :, :64, :64]), logits(t8, X[:, :, :64, :64])[:, :10])
    headless = {key: value for key, value in t8_state.items() if not key.startswith("head.fc.")}
    backbone = fastvit.create_model("fastvit_t8", checkpoint_path=save_safetensors(tmp_path / "bb.safetensors", headless))
    assert backbone.num_classes == 0 and logits(backbone, X[:, :, :64, :64]).shape == (len(X), 768)


def test_in_chans_adapts_the_first_convs(tmp_path, t8, t8_state):
    path = save_safetensors(tmp_path / "t8.safetensors", t8_state)
    grey = fastvit.create_model("fastvit_t8", checkpoint_path=path, in_chans=1)
    rgba = fastvit.create_model("fastvit_t8", checkpoint_path=path, in_chans=4)
    for key in ("stem.0.conv_kxk.0.conv.weight", "stem.0.conv_scale.conv.weight"):
        rgb = t8_state[key]
        assert torch.equal(grey.state_dict()[key], rgb.sum(dim=1, keepdim=True))
        assert torch.equal(rgba.state_dict()[key], torch.cat([rgb, rgb[:, :1]], dim=1) * 0.75)
    # summing the RGB weights makes a grey image act as the same grey in all three channels
    x = X[:, :1, :64, :64]
    torch.testing.assert_close(logits(grey, x), logits(t8, x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_in_chans_adapts_a_fused_first_conv(tmp_path, t8):
    fused = fastvit.reparameterize(t8).state_dict()
    grey = fastvit.create_model("fastvit_t8", checkpoint_path=save_torch(tmp_path / "fused.pth", fused), in_chans=1)
    key = "stem.0.reparam_conv.weight"
    assert torch.equal(grey.state_dict()[key], fused[key].sum(dim=1, keepdim=True))


def _pickle_protocol_5(obj: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=5))


@pytest.mark.parametrize(
    "write, refusal",
    [
        pytest.param(torch.save, r"refusing to load .* would call (posix|os|nt)\.system", id="zip"),
        pytest.param(partial(torch.save, _use_new_zipfile_serialization=False), r"would call \w+\.system", id="legacy"),
        pytest.param(_pickle_protocol_5, "not a PyTorch or safetensors weights file that can be", id="pickle"),
    ],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused_and_never_runs(write, refusal, tmp_path):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch '{marker}'",)

    path = tmp_path / "malicious.pth"
    write({"state_dict": {"stem.0.conv_kxk.0.conv.weight": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match=refusal) as error:
        fastvit.create_model("fastvit_t8", checkpoint_path=path)
    assert "weights_only=True" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["broken.pth", "broken.safetensors"])  # torch.load hands *.safetensors on
@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated",
                                     b"\x10\0\0\0\0\0\0\0xxxxxxxxxxxxxxxx"])
def test_unreadable_files(content, name, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch or safetensors weights file"):
        fastvit.create_model("fastvit_t8", checkpoint_path=path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no weights file"):
        fastvit.create_model("fastvit_t8", checkpoint_path=tmp_path / "absent.safetensors")
