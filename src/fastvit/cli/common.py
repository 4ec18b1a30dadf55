"""What every command shares: exit codes, argument types that refuse bad values with one line, the
model options and how a command builds its model."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from ..data import DECODE_MODES
from ..errors import FastViTError

DEFAULT_MODEL = "fastvit_t8.apple_in1k"

EXIT_OK = 0
EXIT_BAD_INPUTS = 1  # --strict stopped at a file that cannot be read, or no input could be read
EXIT_ERROR = 2  # arguments, model, weights, inputs or resume state: nothing was computed
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process it ended


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong, and where the help is."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def options_given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the options ``argv`` gives, typed at their default value or not: ``argv``
    parsed again with every default of ``parser`` and its subparsers suppressed. ``parser`` keeps no
    defaults afterwards."""
    parsers = [parser]
    for current in parsers:
        for action in current._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return set(vars(parser.parse_args(argv)))


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


def port(text: str) -> int:
    """A TCP port: 0 (any free port) to 65535."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, got {value}")
    return value


def _number(accept, requirement: str):
    """An argument type: a finite number that ``accept`` takes, else one line saying ``requirement``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {text}")
        return value

    return parse


positive_number = _number(lambda value: value > 0, "must be more than 0")
non_negative_number = _number(lambda value: value >= 0, "must be 0 or more")


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


class _DefaultModel(str):
    """The ``--model`` default: a name like any other for the commands that take it as it is, and
    recognisable, so that the model a checkpoint names can take its place (:func:`model_name`)."""


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=_DefaultModel(DEFAULT_MODEL),
        help=f"model name or name.tag (default: the one a checkpoint written by fastvit train names, "
        f"else {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--checkpoint", metavar="PATH",
        help="local weights (.safetensors, .pth, .pth.tar, .pt) instead of downloading the pretrained ones",
    )


def read_labels(path: Path) -> list[str]:
    """Class names from a text file, one per line (blank lines skipped)."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise FastViTError(f"cannot read the labels file {path}: {exc}") from None


def model_name(model: str, checkpoint: str | None) -> str:
    """``--model`` if given, else the model a checkpoint written by ``fastvit train`` was trained as,
    else the default."""
    if isinstance(model, _DefaultModel) and checkpoint:
        from ..models.checkpoints import METADATA_MODEL, read_metadata

        model = read_metadata(checkpoint).get(METADATA_MODEL, model)
    return str(model)  # a plain str: it is pickled into a run's last.pt, read back with weights_only


def load_model(args: argparse.Namespace, **kwargs):
    """The command's model in eval mode: ``--checkpoint`` if given, else the pretrained weights of ``--model``
    (which, when not given, is set here: see :func:`model_name`)."""
    from ..models.registry import create_model

    args.model = model_name(args.model, args.checkpoint)
    model = create_model(args.model, pretrained=args.checkpoint is None, checkpoint_path=args.checkpoint, **kwargs)
    return model.eval()


def add_decode_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--decode {exact,fast}``: how image files become the model's pixels (fastvit.data.DECODE_MODES)."""
    parser.add_argument(
        "--decode", choices=DECODE_MODES, default="exact",
        help="exact (default): timm's transform, bit for bit; fast: JPEGs decoded at a reduced DCT scale and "
        "a faster resize, several times faster on photos much larger than the model's input and within a few "
        "grey levels of exact",
    )
