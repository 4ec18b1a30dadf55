"""ImageNet-1k labels: class names and WordNet synset ids by class index."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

__all__ = ["imagenet_classes", "imagenet_synsets"]


@lru_cache(maxsize=1)
def _imagenet_table() -> tuple[tuple[str, str], ...]:
    """(synset, names) per class index, read from the packaged imagenet1k_classes.tsv."""
    text = resources.files(__package__).joinpath("imagenet1k_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    if [int(index) for index, _, _ in rows] != list(range(1000)):
        raise RuntimeError("imagenet1k_classes.tsv is damaged: expected indices 0..999 in order")
    return tuple((synset, names) for _, synset, names in rows)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names by index, each the full comma-separated list of names
    (index 281 is ``'tabby, tabby cat'``); ``name.split(',')[0]`` gives the short name."""
    return [names for _, names in _imagenet_table()]


def imagenet_synsets() -> list[str]:
    """The 1000 WordNet synset ids of ImageNet-1k by index (index 281 is ``'n02123045'``)."""
    return [synset for synset, _ in _imagenet_table()]

