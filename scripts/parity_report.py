"""Print the largest deviation from timm of every variant (the numbers tests/test_parity.py checks).

    .venv/bin/python scripts/parity_report.py [NAME ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fastvit  # noqa: E402
from test_parity import load_golden, parity_errors  # noqa: E402


def main() -> None:
    print("| model | max rel. error unfused | max rel. error fused | max rel. error features | seconds |")
    print("|---|---|---|---|---|")
    for name in sys.argv[1:] or fastvit.list_models():
        start = time.perf_counter()
        errors = parity_errors(name, load_golden(name))
        worst = {
            kind: max(v for k, v in errors.items() if f".{kind}." in k) for kind in ("unfused", "fused", "features")
        }
        print(
            f"| {name} | {worst['unfused']:.1e} | {worst['fused']:.1e} | {worst['features']:.1e} "
            f"| {time.perf_counter() - start:.1f} |"
        )


if __name__ == "__main__":
    main()
