"""fastvit: Apple's FastViT image models in PyTorch, under timm's names."""

from .data import (
    create_transform,
    imagenet_classes,
    imagenet_synsets,
    load_image,
    resolve_data_config,
    resolve_model_data_config,
)
from .errors import CheckpointError, FastViTError, ImageLoadError, UnknownModelError, WeightsUnavailableError
from .models import (
    FastVit,
    FastVitFeatures,
    create_model,
    get_pretrained_cfg,
    list_models,
    list_pretrained,
    model_info,
    reparameterize,
)
from .runtime.precision import PrecisionNotSupportedError
from .runtime.predictor import Predictor
from .version import __version__  # noqa: F401 (public)

__all__ = [
    "CheckpointError",
    "FastVit",
    "FastVitFeatures",
    "FastViTError",
    "ImageLoadError",
    "PrecisionNotSupportedError",
    "Predictor",
    "UnknownModelError",
    "WeightsUnavailableError",
    "create_model",
    "create_transform",
    "get_pretrained_cfg",
    "imagenet_classes",
    "imagenet_synsets",
    "list_models",
    "list_pretrained",
    "load_image",
    "model_info",
    "reparameterize",
    "resolve_data_config",
    "resolve_model_data_config",
]
