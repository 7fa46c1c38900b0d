"""The loss check (`gpu_bench.py`'s `loss_2048`) from curves that came back in several calls.

    python benchmarks/loss_check.py RESULTS.json [RESULTS.json ...]

On one GPU the check's curves take longer than one call, so `gpu_bench.py --loss-runs` runs some of them
and keeps every finished curve whole under `loss_2048_curves` in its results.json. This reads those files (a
later file's curve replaces an earlier one's), compares the curves with `compare_loss_curves` over the steps
all of them have (the checked three, fp32, plain and fast, and any fp8 curve found), and prints the
comparison as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpu_bench import LOSS_CHECKED, compare_loss_curves


def merged_curves(paths: list[Path]) -> dict[str, dict]:
    """Every `loss_2048_curves` entry of the files, the later file's where two hold the same curve."""
    runs: dict[str, dict] = {}
    for path in paths:
        runs.update(json.loads(path.read_text()).get("loss_2048_curves", {}))
    missing = sorted(set(LOSS_CHECKED) - set(runs))
    if missing:
        raise SystemExit(f"no curve for {missing} in {[str(p) for p in paths]}: run them with "
                         f"`gpu_bench.py --only loss_2048 --loss-runs {','.join(missing)}`")  # fmt: skip
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of gpu_bench.py calls")
    parser.add_argument("--loss-steps", type=int, default=50)
    args = parser.parse_args()
    report = compare_loss_curves(merged_curves(args.results), args.loss_steps)
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("curve_")}, indent=1))


if __name__ == "__main__":
    main()
