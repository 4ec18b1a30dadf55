"""Images in, tensors out: loading (:mod:`.loading`), a model's preprocessing settings (:mod:`.config`),
transform steps (:mod:`.transforms`) and the presets built from them (:mod:`.presets`), ImageNet labels
(:mod:`.labels`).

Typical use::

    cfg = resolve_data_config(model=model)
    transform = create_transform(**cfg)
    batch = transform(load_image("cat.jpg")).unsqueeze(0)
"""

from .config import resolve_data_config, resolve_model_data_config
from .labels import imagenet_classes, imagenet_synsets
from .loading import load_image
from .presets import create_transform
from .transforms import split_per_batch

__all__ = [
    "create_transform",
    "imagenet_classes",
    "imagenet_synsets",
    "load_image",
    "resolve_data_config",
    "resolve_model_data_config",
    "split_per_batch",
]
