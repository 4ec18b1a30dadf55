"""Exceptions raised by fastvit. The command line turns each into a one-line message."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), for one-line errors."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class FastViTError(Exception):
    """Base class of every error fastvit raises on purpose."""


class UnknownModelError(FastViTError, ValueError):
    """A model name or pretrained tag that is not registered."""


class CheckpointError(FastViTError):
    """A weights file that cannot be read, converted or loaded."""


class WeightsUnavailableError(CheckpointError):
    """Pretrained weights that are neither in the local Hugging Face cache nor downloadable
    (offline mode, or the Hub cannot be reached)."""


class ImageLoadError(FastViTError):
    """An image file that cannot be opened or decoded; ``reason`` says why, in a few words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot load image {path!r}: {reason}")
        self.path = path
        self.reason = reason


class BackendError(FastViTError):
    """A runtime (ONNX Runtime, OpenVINO) that cannot load or run the graph it was given."""
