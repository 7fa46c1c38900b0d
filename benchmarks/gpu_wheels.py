"""The wheels the GPU machine lacks, downloaded here into `.whl` for the benchmarks and GPU tests there.

The lent GPU machines (benchmarks/RESULTS.md) have Python 3.12 with torch, transformers, peft, accelerate,
pandas and pytest, and no network. The benchmarks need liger-kernel there; the tests also import the
project's settings and its Dagster graph (conftest), so they need dagster, pydantic-settings and what those
depend on. This downloads that closure for Python 3.12 on x86-64 Linux, leaving out the compiled packages the
machine's image brings in its own builds:

    python benchmarks/gpu_wheels.py      # writes .whl/ (ignored by git); then, on the GPU machine:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

LIGER = "liger-kernel==0.8.5"
# At the versions installed here: Dagster's (which this project pins) and the settings' pydantic.
PINNED_HERE = ("dagster", "dagster-pipes", "dagster-shared", "pydantic", "pydantic-settings")
# The image's own builds, which a wheel in /tmp/site would shadow.
THE_IMAGE_HAS = ("numpy", "grpcio", "protobuf", "markupsafe", "pyyaml")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / ".whl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        download = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", "-d", scratch]  # fmt: skip
        for platform in PLATFORMS:
            download += ["--platform", platform]
        # liger alone: its requirements are torch and triton, which the image has (and which weigh gigabytes).
        subprocess.run([*download, "--no-deps", LIGER], check=True)
        subprocess.run([*download, *(f"{name}=={version(name)}" for name in PINNED_HERE)], check=True)
        args.out.mkdir(exist_ok=True)
        kept = []
        for wheel in sorted(Path(scratch).glob("*.whl")):
            name = wheel.name.split("-")[0].lower().replace("_", "-")
            if not any(name == skip or name.startswith(f"{skip}-") for skip in THE_IMAGE_HAS):
                wheel.replace(args.out / wheel.name)
                kept.append(wheel.name)
    print(f"{len(kept)} wheels in {args.out}")


if __name__ == "__main__":
    main()
