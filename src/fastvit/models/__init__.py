"""The network and everything that defines it, read bottom to top: the fusion maths and the one
reparameterization walker (:mod:`.reparam`), building blocks in both forms (:mod:`.layers`), the
FastViT network (:mod:`.network`), variants and pretrained tags as data (:mod:`.variants`), names and
``create_model`` (:mod:`.registry`), weights (:mod:`.hub` to find and download them,
:mod:`.checkpoints` to read and convert every published layout, :mod:`.weights` to load them) and
statistics (:mod:`.stats`)."""

from .network import FastVit, FastVitFeatures
from .registry import create_model, get_pretrained_cfg, list_models, list_pretrained
from .reparam import reparameterize
from .stats import model_info

__all__ = [
    "FastVit",
    "FastVitFeatures",
    "create_model",
    "get_pretrained_cfg",
    "list_models",
    "list_pretrained",
    "model_info",
    "reparameterize",
]
