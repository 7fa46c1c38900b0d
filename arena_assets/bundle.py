"""An offline bundle for a code-competition notebook (no network, no Dagster): the merged model, this
package as a wheel, and a script that predicts the test file.

    arena bundle --model data/artifacts/final_model/model bundle/
    # in the notebook, with the bundle attached as a dataset:
    pip install --no-index --no-deps bundle/wheels/*.whl
    python bundle/predict.py --test test.parquet --out submission.csv [--tta-seconds 30000]

The predictor needs what a GPU notebook image has (torch, transformers, tokenizers, safetensors, numpy,
pandas, pyarrow, pyyaml); the wheel is installed without its dependencies, which only the training
platform needs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from arena_assets.ranker.artifacts import atomic_directory

PROJECT_ROOT = Path(__file__).resolve().parents[1]

PREDICT_SCRIPT = '''\
"""Predict the test file with the bundled model: `python predict.py --test test.parquet --out sub.csv`."""

import argparse
from pathlib import Path

from arena_assets.ranker.config import PredictConfig
from arena_assets.ranker.predict import predict

HERE = Path(__file__).resolve().parent

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--test", required=True, help="test parquet (or CSV): id, prompt, response_a, response_b")
parser.add_argument("--out", default="submission.csv", help="Kaggle submission: id,winner")
parser.add_argument("--predictions", default="predictions.csv", help="per-row probabilities")
parser.add_argument("--tta-share", type=float, default=1.0, help="rows also scored swapped, least sure first")
parser.add_argument("--tta-seconds", type=float, default=0.0, help="time for the swapped pass (0: none)")
parser.add_argument("--precision", default="auto", help="auto: fp16 on GPUs without native bf16 (T4)")
parser.add_argument("--device-map", default="auto", help="auto: spread a model larger than one GPU")
args = parser.parse_args()
print(predict(PredictConfig(
    model=str(HERE / "model"), input_path=args.test, output_path=args.predictions,
    submission_path=args.out, tta_share=args.tta_share, tta_seconds=args.tta_seconds,
    precision=args.precision, device_map=args.device_map,
)))
'''


def write_bundle(model_dir: Path, out: Path) -> Path:
    """Write `out` (atomically): model/ (a copy of `model_dir`), wheels/ and predict.py."""
    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json, not a model directory; pass final_model/model")
    with atomic_directory(out) as tmp:
        shutil.copytree(model_dir, tmp / "model")
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(tmp / "wheels"), str(PROJECT_ROOT)],
            check=True,
        )  # fmt: skip
        (tmp / "predict.py").write_text(PREDICT_SCRIPT)
    return out
