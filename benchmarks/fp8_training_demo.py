"""What fp8 frozen matmuls do to a trained ranker: the demo's stage 1 with and without `fp8_matmuls`.

    python benchmarks/fp8_training_demo.py --out benchmarks/results/fp8-training-demo.json

On the CPU the fp8 path computes the products of the e4m3-quantized operands in fp32 (ranker/fp8.py): the
quantization the GPU's fp8 matmuls apply, with another summation order. Each run trains the demo's stage-1
recipe (configs/ranker/demo/stage1.yaml) on the embedded default's hard-label set, built once under
--workdir, and reports its validation accuracy and log loss: seeds x thread counts x {full precision (fp32
on the CPU), fp8}.
Not part of `make test`: the twelve runs of the defaults take about 25 minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from arena_assets.embedded import build_embedded_default
from arena_assets.hard_labels import hard_label_set_of
from arena_assets.ranker import trainer
from arena_assets.ranker.config import TrainConfig
from arena_assets.settings import Settings


def hard_label_files(settings: Settings, out: Path) -> tuple[Path, Path]:
    """The embedded default's raw files built into the hard-label set, as the `hard_label_set` asset does."""
    train, validation = out / "train.parquet", out / "validation.parquet"
    if not train.is_file():
        built = hard_label_set_of(settings)
        out.mkdir(parents=True, exist_ok=True)
        built.validation.to_parquet(validation, index=False)
        built.train.to_parquet(train, index=False)
    return train, validation


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the rows")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arena-fp8-demo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    args = parser.parse_args()
    settings = Settings(profile="demo", project_dir=args.workdir, raw_dir=Path("data/raw/demo"),
                        backbone=Path("data/embedded/tiny-qwen2"), artifact_root=Path("data/artifacts"),
                        seed=42)  # fmt: skip
    if not (settings.backbone / "config.json").is_file():
        build_embedded_default(settings)
    train, validation = hard_label_files(settings, args.workdir / "hard_label_set")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for seed in args.seeds:
            for fp8 in (False, True):
                start = time.perf_counter()
                output_dir = args.workdir / f"t{threads}-s{seed}-{'fp8' if fp8 else 'full'}"
                config = settings.ranker_config(
                    TrainConfig, "stage1", backbone=str(settings.backbone), train_path=str(train),
                    validation_path=str(validation), output_dir=str(output_dir), seed=seed, fp8_matmuls=fp8,
                    resume=False,
                )  # fmt: skip
                metrics = trainer.train(config)
                row = {"threads": threads, "seed": seed, "fp8_matmuls": fp8,
                       "val_accuracy": metrics["val_accuracy"], "val_log_loss": metrics["val_log_loss"],
                       "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
