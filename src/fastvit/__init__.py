"""fastvit: Apple's FastViT image models in PyTorch, under timm's names."""

from .errors import CheckpointError, FastViTError, ImageLoadError, UnknownModelError
from .model import FastVit, FastVitFeatures
from .registry import create_model, get_pretrained_cfg, list_models, list_pretrained
from .reparam import reparameterize

__version__ = "0.1.0"
