"""What every command shares: exit codes, argument types that refuse bad values with one line, the
model options and how a command builds its model."""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "fastvit_t8.apple_in1k"

EXIT_OK = 0
EXIT_BAD_INPUTS = 1  # --strict stopped at a file that cannot be read, or no input could be read
EXIT_ERROR = 2  # arguments, model, weights, inputs or resume state: nothing was computed
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong, and where the help is."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def print_table(rows: list[dict]) -> None:
    """A markdown table, so output pastes straight into notes and READMEs."""
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in headers) + " |")


def _whole_number_at_least(minimum: int, requirement: str):
    """An argument type: a whole number of at least ``minimum``, else one line saying ``requirement``."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{requirement}, got {value}")
        return value

    return parse


positive = _whole_number_at_least(1, "must be at least 1")
non_negative = _whole_number_at_least(0, "must be 0 or more")
image_side = _whole_number_at_least(32, "an image side must be at least 32 pixels")  # the network's total stride


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def device(text: str):
    """A torch device this machine has: cpu, cuda, cuda:N, mps."""
    import torch

    try:
        chosen = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (e.g. cpu, cuda, cuda:1)") from None
    problem = _unavailable(chosen)
    if problem:
        raise argparse.ArgumentTypeError(f"device {text!r} is not available here: {problem}")
    return chosen


def _unavailable(chosen) -> str | None:
    """Why this machine cannot run on ``chosen``, or None when it can."""
    import torch

    if chosen.type == "cpu":
        return None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            return "this torch has no CUDA support or sees no GPU"
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            return f"there are {torch.cuda.device_count()} GPUs (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        return None
    if chosen.type == "mps":
        return None if torch.backends.mps.is_available() else "MPS is not available"
    return f"fastvit runs on cpu or cuda, not {chosen.type}"


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or name.tag (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--checkpoint", metavar="PATH",
        help="local weights (.safetensors, .pth, .pth.tar, .pt) instead of downloading the pretrained ones",
    )


def load_model(args: argparse.Namespace, **kwargs):
    """The command's model in eval mode: ``--checkpoint`` if given, else the pretrained weights of ``--model``."""
    from ..models.registry import create_model

    model = create_model(args.model, pretrained=args.checkpoint is None, checkpoint_path=args.checkpoint, **kwargs)
    return model.eval()
