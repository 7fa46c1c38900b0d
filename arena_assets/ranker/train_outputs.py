"""What a training run leaves behind (trainer.py's last phases): the validation figures, `metrics.json`, the
adapter directory swapped in whole, the asset's metadata and the W&B run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from arena_assets.ranker import checkpointing
from arena_assets.ranker.artifacts import METRICS_NAME, atomic_directory, write_manifest
from arena_assets.ranker.card import portable_adapter_config, write_card
from arena_assets.ranker.config import TrainConfig, config_to_dict
from arena_assets.ranker.data import encode_frame, hard_labels
from arena_assets.ranker.evaluation import pair_metrics
from arena_assets.ranker.head import score_sequences
from arena_assets.ranker.modeling import peak_memory_gb
from arena_assets.ranker.pipes import md, path_value, url_value
from arena_assets.ranker.plots import loss_curve_markdown
from arena_assets.ranker.profiling import summary_metrics

if TYPE_CHECKING:
    from arena_assets.ranker.trainer import Run


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """`pair_metrics` of the validation rows, each scored in both orders."""
    config = run.config
    if run.validation is None:
        return {}
    rows = (
        run.validation
        if not config.max_validation_rows
        else run.validation.iloc[: config.max_validation_rows]
    )
    head = run.accelerator.unwrap_model(run.head)
    head.eval()
    both = []
    for swapped in (False, True):
        encoded = encode_frame(
            run.template,
            rows,
            max_length=config.max_length,
            rebalance=config.rebalance_truncation,
            swapped=swapped,
        )
        both.append(
            score_sequences(
                head,
                encoded.input_ids,
                pad_token_id=run.tokenizer.pad_token_id,
                token_budget=config.eval_batch_size * config.max_length,
                max_batch_rows=config.eval_batch_size,
                device=run.accelerator.device,
            )
        )
    run.head.train()
    return pair_metrics(both[0], both[1], hard_labels(rows, config.validation_path))


def log_scores(run: Run, scores: dict[str, float]) -> None:
    """Validation figures to the log and W&B."""
    run.reporter.info(
        f"step {run.state.step} validation " + " ".join(f"{k} {v:.4f}" for k, v in scores.items())
    )
    if run.wandb_run is not None:
        run.wandb_run.log({f"val/{k}": v for k, v in scores.items()}, step=run.state.step)


def metrics_of(run: Run, scores: dict[str, float], wall_start: float) -> dict[str, Any]:
    """What `metrics.json` holds: validation figures, the loss curve, throughput, sizes."""
    state, accelerator = run.state, run.accelerator
    tokens, seconds = (
        (state.timed_tokens, state.timed_seconds)
        if state.timed_tokens > 0  # a run of one step has no timed step: all of it
        else (state.row_tokens, state.train_seconds)
    )
    # Every rank's tokens (ranks hold unequal shares of a step); the ranks step together, so rank 0's clock
    # is everyone's.
    tokens = int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum"))
    return {
        **{f"val_{k}": v for k, v in scores.items()},
        "train_loss_curve": state.loss_curve,
        "train_loss_final": state.loss_curve[-1][1] if state.loss_curve else float("nan"),
        "train_tokens_per_second": tokens / max(seconds, 1e-9),
        "padding_fraction": state.padded_tokens / max(state.tokens_processed, 1),
        "shared_prefix_fraction": state.shared_tokens / max(state.row_tokens, 1),
        "steps": state.step,
        "train_rows": len(run.encoded.input_ids),
        "num_processes": run.accelerator.num_processes,
        "wall_seconds": time.perf_counter() - wall_start,
        "peak_memory_gb": peak_memory_gb(),
        **{f"train_{k}": v for k, v in run.encoded.length_report().items()},
        **summary_metrics(run.profile_summary, "step"),
        **{f"fp8_{k}": v for k, v in run.fp8_check.items()},
        **({} if run.graphs is None else {
            "cuda_graph_shapes": len(run.graphs.captured), "cuda_graph_replays": run.graphs.replays}),
    }


def save(run: Run, metrics: dict[str, Any], adapter_state: dict[str, torch.Tensor]) -> None:
    """Finish W&B, then swap the adapter directory in (rank 0); the old adapter stays until all succeeded."""
    config = run.config
    if run.wandb_run is not None:
        metrics["wandb_url"] = run.wandb_run.url or ""  # None in offline mode
        run.wandb_run.finish()
    output_dir = Path(config.output_dir)
    made_by = checkpointing.fingerprint(config, run.accelerator.num_processes)
    with atomic_directory(output_dir) as tmp:
        run.model.save_pretrained(tmp, state_dict=adapter_state)
        run.tokenizer.save_pretrained(tmp)
        (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
        portable_adapter_config(tmp, config.backbone)
        write_card(
            tmp,
            kind="LoRA adapter",
            backbone=config.backbone,
            max_length=config.max_length,
            metrics=metrics,
            data=f"{metrics['train_rows']:,} training rows ({config.label} labels)",
        )
        write_manifest(
            tmp,
            config=config_to_dict(config),
            inputs=made_by["inputs"],
            extra={"kind": "lora_adapter", "ranker_code": made_by["code"]},
        )
    checkpointing.clear(run.work_dir)
    run.reporter.report_materialization(materialization_metadata(metrics, output_dir))


def materialization_metadata(metrics: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Numbers that plot across runs, the adapter path, the loss curve, the W&B link."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    metadata: dict[str, Any] = {
        **numbers,
        "adapter_dir": path_value(output_dir),
        "loss_curve": md(loss_curve_markdown(metrics["train_loss_curve"])),
    }
    if metrics.get("wandb_url"):
        metadata["wandb_url"] = url_value(metrics["wandb_url"])
    return metadata


def start_wandb(config: TrainConfig, is_main: bool) -> Any:
    """A W&B run on rank 0 when enabled; the API key comes from the environment, never from the config."""
    if not (config.wandb and is_main):
        return None
    import wandb

    return wandb.init(
        project=config.wandb_project,
        mode=config.wandb_mode,
        config=config_to_dict(config),
        name=config.wandb_run_name or None,
    )


