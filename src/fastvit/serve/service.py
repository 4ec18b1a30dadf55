"""The model a server runs: built from the settings, warmed for the batch sizes the batcher uses, and
the one function that turns an upload into pixels."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..data import ImageDecoder, imagenet_classes
from ..errors import FastViTError
from ..models.registry import create_model
from ..runtime.predictor import Predictor
from .settings import ServeSettings

__all__ = ["ModelOutputs", "ModelService"]

TIMING_ROUNDS = 3
"""Timed rounds over the batch sizes after warm-up; each size's fastest call is the cost the batcher
plans with. The sizes take turns, so that a busy moment of the machine slows them alike."""


@dataclass(frozen=True)
class ModelOutputs:
    """What the model gives for a batch (or, indexed, for one image): the pooled embedding and, for
    a model with a head, its logits (a MobileCLIP tower's head gives its CLIP embedding)."""

    embedding: Tensor
    logits: Tensor | None

    def __getitem__(self, index: int | slice) -> ModelOutputs:
        return ModelOutputs(self.embedding[index], None if self.logits is None else self.logits[index])


class ModelService:
    """A model ready to serve: the fast :class:`~fastvit.runtime.predictor.Predictor` computing pooled
    embeddings, the model's own head applied to them (logits for ``/v1/predict``, the projection for
    ``?projected``), so one compiled path serves every route, and the class names."""

    def __init__(
        self,
        model: str,
        *,
        checkpoint: str | None = None,
        class_names: Sequence[str] | None = None,
        input_size: Sequence[int] | None = None,
        precision: str = "fp32",
        backend: str = "torch",
        decode: str = "exact",
        threads: int | None = None,
    ):
        network = create_model(model, pretrained=checkpoint is None, checkpoint_path=checkpoint).eval()
        self.checkpoint = checkpoint
        self.pretrained_cfg = dict(network.pretrained_cfg)
        # own weights keep the architecture's name, not the pretrained tag they replace
        self.model_name = self.pretrained_cfg.get("architecture", model) if checkpoint else model
        self.num_classes: int = network.num_classes
        self.class_names = _class_names(class_names or self.pretrained_cfg.get("label_names"), self.num_classes)
        size = (3, *input_size) if input_size else None
        self.predictor = Predictor(network, precision=precision, backend=backend, threads=threads, input_size=size,
                                   inplace=True)
        self.head = copy.deepcopy(self.predictor.model.get_classifier()).float() if self.num_classes else None
        self._decoder = ImageDecoder(self.predictor.transform(), decode)
        self.batch_sizes: list[int] = []
        # load_image refuses images between 1x and 2x Pillow's pixel limit by turning its warning into
        # an error inside warnings.catch_warnings, which is not thread-safe; decode() runs on several
        # threads at once, so the same filter is set for the whole process.
        warnings.simplefilter("error", Image.DecompressionBombWarning)

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ModelService:
        return cls(settings.model, checkpoint=settings.checkpoint, class_names=settings.class_names,
                   input_size=settings.input_size, precision=settings.precision, backend=settings.backend,
                   decode=settings.decode, threads=settings.threads_per_worker)

    def decode(self, data: bytes) -> Tensor:
        """An upload as the model's input for one image: a uint8 (3, H, W) tensor (resized and cropped;
        the float conversion runs once per batch). Thread-safe. Raises
        :class:`~fastvit.errors.ImageLoadError`."""
        return self._decoder(data)

    def __call__(self, images: Tensor) -> ModelOutputs:
        """The outputs for a uint8 batch (B, 3, H, W) made by :meth:`decode`."""
        embedding = self.predictor.embed(self._decoder.to_float(images))
        if self.head is None:
            return ModelOutputs(embedding, None)
        with torch.inference_mode():
            return ModelOutputs(embedding, self.head(embedding))

    def prepare(self, batch_sizes: Sequence[int]) -> dict[int, float]:
        """Compile and warm the model for these batch sizes, after which no call ever compiles, and
        return the seconds a call of each size takes."""
        self.predictor.prepare(batch_sizes, outputs=("embed",), freeze=True)
        shape = self.predictor.input_size
        batches = {size: torch.zeros(size, *shape, dtype=torch.uint8) for size in sorted(set(batch_sizes))}
        costs = dict.fromkeys(batches, math.inf)
        for _ in range(TIMING_ROUNDS):
            for size, images in batches.items():
                start = time.perf_counter()
                self(images)
                costs[size] = min(costs[size], time.perf_counter() - start)
        self.batch_sizes = sorted(costs)
        return costs

    def describe(self) -> dict[str, Any]:
        """What ``/v1/models`` reports about the model."""
        return {
            "name": self.pretrained_cfg.get("architecture", self.model_name),
            "tag": None if self.checkpoint else self.pretrained_cfg.get("tag"),
            "checkpoint": Path(self.checkpoint).name if self.checkpoint else None,
            "classes": self.num_classes,
            "class_names": self.class_names is not None,
            "embedding_size": self.predictor.num_features,
            "input_size": list(self.predictor.input_size),
            "precision": self.predictor.precision,
            "backend": self.predictor.backend,
            "batch_sizes": self.batch_sizes,
        }


def _class_names(names: Sequence[str] | None, num_classes: int) -> tuple[str, ...] | None:
    """The given names (checked against the model), else ImageNet's for 1000 outputs, else None."""
    if names is not None:
        if len(names) != num_classes:
            raise FastViTError(f"the labels name {len(names)} classes, the model has {num_classes}")
        return tuple(names)
    imagenet = imagenet_classes()
    return tuple(imagenet) if num_classes == len(imagenet) else None
