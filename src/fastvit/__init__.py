"""fastvit: Apple's FastViT image models in PyTorch, under timm's names."""

from .data import create_transform, imagenet_classes, imagenet_synsets, load_image
from .data import resolve_data_config, resolve_model_data_config
from .errors import CheckpointError, FastViTError, ImageLoadError, UnknownModelError, WeightsUnavailableError
from .models import FastVit, FastVitFeatures, model_info, reparameterize
from .models import create_model, get_pretrained_cfg, list_models, list_pretrained
from .runtime.predictor import Predictor

__version__ = "0.1.0"
__all__ = [
    "CheckpointError",
    "FastVit",
    "FastVitFeatures",
    "FastViTError",
    "ImageLoadError",
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
