"""Images in, tensors out: loading (:mod:`.loading`), a model's preprocessing settings (:mod:`.config`),
transform steps (:mod:`.transforms`) and the presets built from them (:mod:`.presets`), files to
per-image tensors exactly or fast (:mod:`.decoding`), ImageNet labels (:mod:`.labels`).

Typical use::

    cfg = resolve_data_config(model=model)
    transform = create_transform(**cfg)
    batch = transform(load_image("cat.jpg")).unsqueeze(0)

    decoder = create_decoder(cfg, decode="fast")  # many files: uint8 per image, floats per batch
    batch = decoder.to_float(stack_images([decoder(path) for path in paths]))
"""

from .config import resolve_data_config, resolve_model_data_config
from .decoding import DECODE_MODES, ImageDecoder, create_decoder, stack_images
from .labels import imagenet_classes, imagenet_synsets
from .loading import image_files_under, load_image
from .presets import create_transform
from .transforms import split_per_batch

__all__ = [
    "DECODE_MODES",
    "ImageDecoder",
    "create_decoder",
    "create_transform",
    "image_files_under",
    "imagenet_classes",
    "imagenet_synsets",
    "load_image",
    "resolve_data_config",
    "resolve_model_data_config",
    "split_per_batch",
    "stack_images",
]
