"""Apple's checkpoint layouts written from timm's keys: the inverse of ``fastvit.models.checkpoints``' conversion.

Kept out of the package and written stage-first (the package converts key segment by segment),
so the tests compare two independent mappings. The key lists of Apple's own models
(tests/golden/apple_fastvit_*.txt) check this module; this module then writes Apple-format
files for the loader tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from synthetic_weights import synthetic_tensor

_TIMM_TO_APPLE = {
    "conv_kxk": "rbr_conv",
    "conv_scale": "rbr_scale",
    "identity": "rbr_skip",
    "large_conv": "lkb_origin",
    "mlp": "convffn",
    "pos_enc": "pe",
}
_STAGE_PARTS = ("downsample", "pos_emb", "blocks")
"""Apple's flat ``network`` list holds, per stage: PatchEmbed, RepCPE, then the blocks."""


def network_indices(keys: Iterable[str]) -> dict[tuple[int, str], int]:
    """Position in Apple's flat ``network`` list of each (stage, part) that has weights."""
    keys = list(keys)
    stages = sorted({int(key.split(".")[1]) for key in keys if key.startswith("stages.")})
    present = [(stage, part) for stage in stages for part in _STAGE_PARTS
               if any(key.startswith(f"stages.{stage}.{part}.") for key in keys)]
    return {stage_part: position for position, stage_part in enumerate(present)}


def apple_key(key: str, indices: Mapping[tuple[int, str], int]) -> str:
    """Apple's name for the timm key ``key`` (either form)."""
    parts = key.split(".")
    if parts[-1] == "gamma":  # Apple's layer scales are bare parameters
        parts.pop()
    if parts[0] == "stem":
        parts[0] = "patch_embed"
    elif parts[0] == "final_conv":
        parts[0] = "conv_exp"
        if parts[1] == "se":  # MobileOne's SE block names its convs reduce / expand
            parts[2] = {"fc1": "reduce", "fc2": "expand"}[parts[2]]
    elif parts[0] == "head":
        del parts[1]  # head.fc.weight -> head.weight
    elif parts[0] == "stages":
        stage, part, rest = int(parts[1]), parts[2], parts[3:]
        if part == "downsample" and rest[1:3] == ["0", "reparam_conv"]:
            rest[2] = "lkb_reparam"  # the fused large-kernel conv of stages.S.downsample.proj.0
        parts = ["network", str(indices[stage, part]), *rest]
    return ".".join(_TIMM_TO_APPLE.get(part, part) for part in parts)


def to_apple(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm-layout state dict (unfused or fused) in Apple's ml-fastvit layout."""
    indices = network_indices(state_dict)
    return {apple_key(key, indices): value for key, value in state_dict.items()}


def to_mobileclip_v1(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm-layout image tower as in Apple's MobileCLIP v1 ``.pt`` files: Apple's keys under
    ``image_encoder.model.``, the projection as a bias-free ``head.proj`` (in, out) matrix, and the
    text tower and logit scale beside it."""
    tower = {key: value for key, value in state_dict.items() if not key.startswith("head.fc.")}
    checkpoint = {f"image_encoder.model.{key}": value for key, value in to_apple(tower).items()}
    checkpoint["image_encoder.model.head.proj"] = state_dict["head.fc.weight"].T.contiguous()
    checkpoint["text_encoder.embedding_layer.weight"] = torch.zeros(8, 4)
    checkpoint["logit_scale"] = torch.tensor(4.6)
    return checkpoint


def to_open_clip(state_dict: Mapping[str, Tensor], ddp: bool = True) -> dict[str, Tensor]:
    """A timm-layout image tower inside an OpenCLIP / MobileCLIP2 checkpoint (``visual.trunk.``)."""
    prefix = "module." if ddp else ""
    checkpoint = {f"{prefix}visual.trunk.{key}": value for key, value in state_dict.items()}
    checkpoint[f"{prefix}text.token_embedding.weight"] = torch.zeros(8, 4)
    checkpoint[f"{prefix}logit_scale"] = torch.tensor(4.6)
    return checkpoint


def read_key_list(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """A key list file of ``key (shape)`` lines, as written by scripts/make_golden_apple.py."""
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, _, shape = line.partition(" ")
        entries.append((key, tuple(int(n) for n in shape.strip("(),").split(",") if n.strip())))
    return entries


def synthetic_apple_state_dict(key_shapes: Iterable[tuple[str, tuple[int, ...]]]) -> dict[str, Tensor]:
    """Synthetic weights for Apple's keys, seeded by Apple's own names (no conversion involved).
    Apple's bare layer scales draw from the same range as timm's ``gamma`` parameters."""
    return {
        key: synthetic_tensor(f"{key}.gamma" if key.rsplit(".", 1)[-1].startswith("layer_scale") else key, shape)
        for key, shape in key_shapes
    }
