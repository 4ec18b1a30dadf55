"""Cold start: a whole ``fastvit predict PHOTO --checkpoint LOCAL`` process against a whole
``python -c "import torch"`` process, the two taking turns, median of each.

    python benchmarks/cold_start.py --runs 5
    python benchmarks/cold_start.py --runs 5 -- --precision bf16     # arguments after -- go to predict

The checkpoint is the test suite's synthetic fastvit_t8 (1000 classes), written to a temporary
folder; nothing is downloaded. What a cold start costs beyond torch's import is the difference
of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))


def wall_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="whole-process runs of each command (default 5)")
    parser.add_argument("--photo", default=str(ROOT / "tests" / "images" / "chelsea.png"))
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    from conftest import save_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_checkpoint(Path(folder) / "fastvit_t8.safetensors")
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "fastvit predict": [sys.executable, "-m", "fastvit", "predict", args.photo, "--checkpoint", str(checkpoint),
                                *extra],
        }
        wall_seconds(commands["fastvit predict"])  # file caches warm for both
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(wall_seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:16s} median {medians[name]:.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"fastvit predict {' '.join(extra)} costs {medians['fastvit predict'] - medians['import torch']:+.2f} s "
          "beyond torch's import (difference of the medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
