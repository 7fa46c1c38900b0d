"""Which response wins, for a file of pairs or one pair, with a merged ranker model and nothing else.

    python -m arena_assets.ranker.predict --config predict.yaml [--field value ...]
    arena predict --model DIR pairs.parquet predictions.csv [--submission submission.csv]
    arena predict --model DIR --prompt "..." --response-a "..." --response-b "..."

No Dagster and no accelerate: one process, on the GPU when there is one (or, with `device_map: auto`, spread
over every GPU when the model is larger than one), on the CPU otherwise. Every row is scored in the order
given; then, least certain first (smallest |p(A) - p(B)|), rows are scored with the responses swapped until
`tta_share` of them or `tta_seconds` runs out, and those rows average both orders (the swapped order's
letters flipped back). Writes a CSV with `id, prob_a, prob_b, winner, both_orders` and, on request, the
competition's `id,winner` submission.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from arena_assets.ranker.artifacts import atomic_write_text
from arena_assets.ranker.card import RANKER_NAME
from arena_assets.ranker.cli_args import parse_config
from arena_assets.ranker.config import PredictConfig, TrainConfig
from arena_assets.ranker.data import PAIR_COLUMNS, encode_frame
from arena_assets.ranker.evaluation import prob_b, swap_averaged_logits
from arena_assets.ranker.head import LetterHead, score_packed, score_sequences
from arena_assets.ranker.modeling import load_backbone, peak_memory_gb, resolve_dtype
from arena_assets.ranker.pipes import path_value, pipes_reporter
from arena_assets.ranker.prompt import PromptTemplate, load_tokenizer

PREDICTION_COLUMNS = ("id", "prob_a", "prob_b", "winner", "both_orders")
SWAP_CHUNK_ROWS = 256  # the swapped pass checks its time budget between chunks of this many rows


@dataclass
class Predictor:
    """A loaded model as a letter head, its tokenizer's judge prompt, and where its inputs go."""

    head: LetterHead
    template: PromptTemplate
    pad_token_id: int
    device: torch.device
    config: PredictConfig
    tokens_scored: int = 0  # the encoded rows' tokens through the model so far, both orders counted

    @classmethod
    def load(cls, config: PredictConfig) -> Predictor:
        if not config.max_length:
            trained = Path(config.model) / RANKER_NAME
            length = (
                json.loads(trained.read_text())["max_length"] if trained.is_file() else TrainConfig.max_length
            )
            config = dataclasses.replace(config, max_length=length)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = load_tokenizer(config.model)
        spread = config.device_map == "auto" and device.type == "cuda"
        model = load_backbone(
            config.model,
            dtype=resolve_dtype(config.precision, device),
            device=device,
            use_liger=config.use_liger,
            random_init=config.random_init,
            device_map="auto" if spread else None,
            packed=config.pack_sequences,
        )
        template = PromptTemplate.from_tokenizer(tokenizer)
        # Inputs go where the embeddings are: the first GPU of a device map.
        device = model.get_input_embeddings().weight.device
        return cls(
            LetterHead(
                model,
                template.letter_ids,
                head_rows_only=config.head_rows_only,
                residual_in_matmul=config.residual_in_matmul,
            ).eval(),
            template,
            tokenizer.pad_token_id,
            device,
            config,
        )

    def logits(self, rows: pd.DataFrame, *, swapped: bool) -> np.ndarray:
        """Letter logits [N, 2] of `rows` shown in their order or swapped."""
        if len(rows) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        encoded = encode_frame(
            self.template,
            rows,
            max_length=self.config.max_length,
            rebalance=self.config.rebalance_truncation,
            swapped=swapped,
        )
        self.tokens_scored += sum(len(ids) for ids in encoded.input_ids)
        if self.config.pack_sequences:
            logits, _ = score_packed(
                self.head,
                encoded.input_ids,
                pairs=False,
                token_budget=self.config.token_budget,
                device=self.device,
                row_multiple=self.config.sdpa_row_multiple,
            )
            return logits
        return score_sequences(
            self.head,
            encoded.input_ids,
            pad_token_id=self.pad_token_id,
            token_budget=self.config.token_budget,
            max_batch_rows=self.config.max_batch_rows,
            device=self.device,
        )


def least_certain_first(logits: np.ndarray) -> np.ndarray:
    """Row indices ordered by |p(A) - p(B)|, smallest first (ties by row order)."""
    return np.argsort(np.abs(1.0 - 2.0 * prob_b(logits)), kind="stable")


def predict_frame(
    predictor: Predictor, rows: pd.DataFrame, *, clock: Callable[[], float] = time.monotonic
) -> pd.DataFrame:
    """`PREDICTION_COLUMNS` for `rows` (which need id, prompt, response_a, response_b)."""
    config = predictor.config
    first = predictor.logits(rows, swapped=False)
    both = np.zeros(len(rows), dtype=bool)
    logits = first.astype(np.float64)
    candidates = least_certain_first(first)[: math.ceil(config.tta_share * len(rows))]
    deadline = clock() + config.tta_seconds if config.tta_seconds > 0 else math.inf
    for start in range(0, len(candidates), SWAP_CHUNK_ROWS):
        if clock() >= deadline:
            break
        chunk = candidates[start : start + SWAP_CHUNK_ROWS]
        swapped = predictor.logits(rows.iloc[chunk], swapped=True)
        logits[chunk] = swap_averaged_logits(first[chunk], swapped)
        both[chunk] = True
    p_b = prob_b(logits)
    return pd.DataFrame(
        {
            "id": rows["id"].to_numpy(),
            "prob_a": 1.0 - p_b,
            "prob_b": p_b,
            "winner": np.where(p_b > 0.5, "model_b", "model_a"),
            "both_orders": both,
        }
    )


def read_pairs_file(path: str | Path, id_column: str) -> pd.DataFrame:
    """A parquet or CSV of pairs, with its id column as `id`; a missing column names the file."""
    path = Path(path)
    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    missing = [c for c in (id_column, *PAIR_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; a pairs file has {id_column}, "
            f"{', '.join(PAIR_COLUMNS)} (found {list(frame.columns)})"
        )
    frame = frame.rename(columns={id_column: "id"}) if id_column != "id" else frame
    for column in PAIR_COLUMNS:
        frame[column] = frame[column].fillna("").astype(str)
    return frame.reset_index(drop=True)


def predict(config: PredictConfig, *, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Predict `input_path` into `output_path` (and `submission_path`); returns what the run measured."""
    start = time.perf_counter()
    rows = read_pairs_file(config.input_path, config.id_column)
    predictor = Predictor.load(config)
    loaded = time.perf_counter()
    frame = predict_frame(predictor, rows, clock=clock)
    seconds = time.perf_counter() - loaded
    atomic_write_text(Path(config.output_path), frame.to_csv(index=False))
    if config.submission_path:
        ids = pd.to_numeric(frame["id"], errors="raise").astype(np.int64)
        atomic_write_text(
            Path(config.submission_path), frame.assign(id=ids)[["id", "winner"]].to_csv(index=False)
        )
    metrics = {
        "rows": len(frame),
        "rows_both_orders": int(frame["both_orders"].sum()),
        "rows_per_second": len(frame) / seconds if seconds else 0.0,
        "tokens_scored": predictor.tokens_scored,
        "tokens_per_second": predictor.tokens_scored / seconds if seconds else 0.0,
        "predict_seconds": seconds,
        "wall_seconds": time.perf_counter() - start,
        "peak_memory_gb": peak_memory_gb(),
        "share_model_b": float((frame["winner"] == "model_b").mean()) if len(frame) else float("nan"),
    }
    if config.metrics_path:
        atomic_write_text(Path(config.metrics_path), json.dumps(metrics, indent=2))
    return metrics


def predict_one(config: PredictConfig, prompt: str, response_a: str, response_b: str) -> dict[str, Any]:
    """One pair, both orders: the probabilities and the winner."""
    rows = pd.DataFrame(
        [{"id": "pair", "prompt": prompt, "response_a": response_a, "response_b": response_b}]
    )
    frame = predict_frame(Predictor.load(config), rows)
    return frame.iloc[0].drop("id").to_dict()


def main(argv: list[str] | None = None) -> None:
    config = parse_config(PredictConfig, argv, description=__doc__)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one process predicts; under a multi-process launch the other ranks leave at once
    with pipes_reporter(is_main_process=True) as reporter:  # one process: it is rank 0
        metrics = predict(config)
        reporter.report_materialization({**metrics, "predictions": path_value(config.output_path)})


if __name__ == "__main__":
    main()
