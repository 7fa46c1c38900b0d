"""LoRA fine-tuning of the A/B letter logits: stage 1 (hard labels) and stage 2 (soft labels).

    accelerate launch -m arena_assets.ranker.trainer --config train.json
    python -m arena_assets.ranker.trainer --config train.json          # one process

Reads a training parquet whose rows come in (original, A/B swap) pairs and writes a peft adapter directory
(atomically, with `metrics.json` and `manifest.json`). Checkpoints go to `<output_dir>.work/` and a rerun
with `resume` continues from the newest one. Only rank 0 writes files and reports to Dagster.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_cosine_with_min_lr_schedule_with_warmup

from arena_assets.ranker import checkpointing
from arena_assets.ranker.artifacts import atomic_directory, write_manifest
from arena_assets.ranker.collate import collate_rows, pair_batches, pair_rows, shard_batches
from arena_assets.ranker.config import TrainConfig, config_to_dict, load_config
from arena_assets.ranker.data import check_swap_pairs, encode_frame, hard_labels, read_pairs, teacher_logits
from arena_assets.ranker.evaluation import evaluate_pairs
from arena_assets.ranker.losses import hard_label_loss, soft_label_loss
from arena_assets.ranker.modeling import (
    LetterHead,
    MasterWeights,
    apply_gradient_checkpointing,
    fast_path_report,
    load_backbone,
    resolve_dtype,
)
from arena_assets.ranker.pipes import md, pipes_reporter
from arena_assets.ranker.prompt import PromptTemplate, letter_token_ids


@dataclass
class TrainState:
    """What a checkpoint restores besides weights: the step and the loss curve so far."""

    step: int = 0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    tokens_processed: int = 0
    padded_tokens: int = 0
    train_seconds: float = 0.0
    # Throughput excludes each process's first step (kernel selection, allocator warm-up).
    timed_tokens: int = 0
    timed_seconds: float = 0.0


def build_model(config: TrainConfig, accelerator: Accelerator) -> tuple[PeftModel, torch.dtype]:
    """The backbone with LoRA adapters on the configured projections."""
    dtype = resolve_dtype(config.precision, accelerator.device)
    model = load_backbone(
        config.backbone,
        dtype=dtype,
        device=accelerator.device,
        attn_implementation=config.attn_implementation,
        use_liger=config.use_liger,
        random_init=config.random_init,
    )
    model.config.use_cache = False
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    # peft upcasts adapters to fp32 by default, so every LoRA matmul runs in fp32 with dtype copies around
    # it; with adapter_compute_dtype they stay in the compute dtype and MasterWeights keeps fp32 copies.
    peft_model = get_peft_model(model, lora, autocast_adapter_dtype=not config.adapter_compute_dtype)
    apply_gradient_checkpointing(peft_model, config.gradient_checkpointing)
    return peft_model, dtype


def build_optimizer(
    config: TrainConfig, params: list[tuple[str, torch.nn.Parameter]]
) -> torch.optim.Optimizer:
    """AdamW with separate learning rates for lora_A and lora_B weights."""
    groups = [
        {"params": [p for n, p in params if "lora_A" in n], "lr": config.lr_lora_a},
        {"params": [p for n, p in params if "lora_A" not in n], "lr": config.lr_lora_b},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs = {"betas": config.adam_betas, "eps": config.adam_eps, "weight_decay": config.weight_decay}
    if config.optimizer == "adamw_8bit":
        import bitsandbytes as bnb  # optional GPU extra

        return bnb.optim.AdamW8bit(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def plan_steps(config: TrainConfig, lengths: np.ndarray, *, num_processes: int) -> list[list[list[int]]]:
    """Every optimizer step as its micro-batches of row indices (a row and its swap adjacent), in order.

    The steps do not depend on `num_processes`: step s holds the same global_batch_size /
    per_device_batch_size micro-batches for any N, and process r runs micro-batches r, r+N, ... of it
    (`shard_batches`). Epochs are joined before they are cut into steps. Only the last step can be short; it
    keeps a multiple of N micro-batches (at most N-1 are dropped per run), since every process must run as
    many forward passes.
    """
    pairs_per_batch = config.per_device_batch_size // 2
    per_step = config.accumulation_steps(num_processes) * num_processes
    pair_lengths = np.maximum(lengths[0::2], lengths[1::2]).tolist()
    batches: list[list[int]] = []
    epoch = 0
    # epochs == 0 means "as many epochs as max_steps needs".
    while epoch < config.epochs or (config.epochs <= 0 and len(batches) < config.max_steps * per_step):
        epoch_batches = pair_batches(
            pair_lengths,
            pairs_per_batch,
            seed=config.seed,
            epoch=epoch,
            group_by_length=config.group_by_length,
        )
        if config.epochs > 0 and epoch + 1 > config.epochs:  # a fractional last epoch
            epoch_batches = epoch_batches[: int(len(epoch_batches) * (config.epochs - epoch))]
        if not epoch_batches:
            break
        batches.extend(pair_rows(b) for b in epoch_batches)
        epoch += 1
    steps = [batches[start : start + per_step] for start in range(0, len(batches), per_step)]
    if steps:
        steps[-1] = steps[-1][: len(steps[-1]) // num_processes * num_processes]
        if not steps[-1]:
            steps.pop()
    if batches and not steps:
        raise ValueError(f"{len(batches)} micro-batches cannot be shared among {num_processes} processes")
    return steps


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns the metrics written to `metrics.json`."""
    # Precision is the ranker's own (weights loaded in the compute dtype), not accelerate's autocast.
    accelerator = Accelerator(mixed_precision="no")
    if accelerator.distributed_type == DistributedType.FSDP:
        # prepare() turns the LoRA weights into flat shards, while MasterWeights, the rank-0 save_pretrained
        # and evaluation through unwrap_model need them whole: remove once those gather full weights.
        raise NotImplementedError(
            "the trainer runs under DDP, not yet FSDP (docs/multi-gpu.md): launch it "
            "with configs/accelerate/ddp.yaml or --num_processes"
        )
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    work_dir = output_dir.with_name(output_dir.name + ".work")
    is_main = accelerator.is_main_process

    with pipes_reporter(is_main_process=is_main) as reporter:
        wall_start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(config.backbone)
        template = PromptTemplate.from_tokenizer(tokenizer)
        letters = letter_token_ids(tokenizer)

        frame = read_pairs(config.train_path)
        check_swap_pairs(frame, config.train_path)
        encoded = encode_frame(
            template, frame, max_length=config.max_length, rebalance=config.rebalance_truncation
        )
        if config.label == "hard":
            targets: np.ndarray = hard_labels(frame, config.train_path)
        else:
            targets = teacher_logits(frame, config.train_path)
        validation = read_pairs(config.validation_path) if config.validation_path else None
        reporter.info(
            f"train rows {len(frame)} ({len(frame) // 2} swap pairs), "
            f"validation rows {0 if validation is None else len(validation)}"
        )

        model, dtype = build_model(config, accelerator)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        masters = MasterWeights(trainable) if trainable[0][1].dtype != torch.float32 else None
        optimizer = build_optimizer(config, masters.named_parameters() if masters else trainable)

        steps = plan_steps(config, encoded.lengths, num_processes=accelerator.num_processes)
        accumulation = config.accumulation_steps(accelerator.num_processes)
        total_steps = len(steps)
        if config.max_steps > 0:
            total_steps = min(total_steps, config.max_steps)
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer,
            num_warmup_steps=int(config.warmup_ratio * total_steps),
            num_training_steps=total_steps,
            min_lr_rate=config.min_lr_ratio,
        )
        head = accelerator.prepare(LetterHead(model, letters))
        state = TrainState()
        if config.resume:
            restored = checkpointing.load_latest(
                work_dir,
                model=model,
                masters=masters,
                optimizer=optimizer,
                scheduler=scheduler,
                process_index=accelerator.process_index,
            )
            if restored is not None:
                state = TrainState(**restored)
                reporter.info(f"resumed from step {state.step} of {total_steps}")
        reporter.info(
            f"{total_steps} optimizer steps x {accumulation} micro-batches of "
            f"{config.per_device_batch_size} rows on {accelerator.num_processes} process(es); "
            + fast_path_report(model, config, dtype)
        )
        run = _start_wandb(config, is_main)

        progress = tqdm(total=total_steps, initial=state.step, disable=not is_main, desc="train")
        head.train()
        first_step = state.step
        while state.step < total_steps:
            step_start = time.perf_counter()
            step_batches = shard_batches(
                steps[state.step],
                num_processes=accelerator.num_processes,
                process_index=accelerator.process_index,
            )
            # DDP averages gradients over processes, so each weighs its rows against the step's rows per
            # process: the gradient is the mean over all the step's rows even where a short batch leaves
            # the processes unequal rows, as with one process.
            step_rows = sum(len(rows) for rows in steps[state.step]) / accelerator.num_processes
            step_loss = torch.zeros((), device=accelerator.device)
            step_tokens = 0
            for index, rows in enumerate(step_batches):
                batch = collate_rows(
                    [_feature(encoded.input_ids[r], targets[r], config.label) for r in rows],
                    pad_token_id=tokenizer.pad_token_id,
                )
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                # Gradients are all-reduced once per optimizer step, on the last micro-batch.
                sync = index == len(step_batches) - 1
                with nullcontext() if sync else accelerator.no_sync(head):
                    logits = head(batch["input_ids"], batch["attention_mask"])
                    if config.label == "hard":
                        loss = hard_label_loss(logits, batch["labels"])
                    else:
                        loss = soft_label_loss(
                            logits, batch["teacher_logits"], temperature=config.temperature
                        )
                    accelerator.backward(loss * len(rows) / step_rows)
                step_loss += loss.detach() * len(rows) / step_rows
                step_tokens += int(batch["attention_mask"].numel())
                state.tokens_processed += int(batch["attention_mask"].numel())
                state.padded_tokens += int((batch["attention_mask"] == 0).sum())
            if masters is not None:
                masters.grads_to_master()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                masters.parameters() if masters else [p for _, p in trainable], config.max_grad_norm
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if masters is not None:
                masters.master_to_model()
            state.step += 1
            step_seconds = time.perf_counter() - step_start
            state.train_seconds += step_seconds
            if state.step > first_step + 1:
                state.timed_tokens += step_tokens
                state.timed_seconds += step_seconds
            mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
            state.loss_curve.append((state.step, round(mean_loss, 6)))
            progress.update(1)
            if state.step % config.log_every_steps == 0 or state.step == total_steps:
                lr = scheduler.get_last_lr()
                reporter.info(
                    f"step {state.step}/{total_steps} loss {mean_loss:.4f} grad_norm "
                    f"{float(grad_norm):.3f} lr {lr[-1]:.2e}"
                )
                if run is not None:
                    run.log(
                        {"train/loss": mean_loss, "train/grad_norm": float(grad_norm), "train/lr": lr[-1]},
                        step=state.step,
                    )
            if (
                config.eval_every_steps
                and state.step % config.eval_every_steps == 0
                and validation is not None
            ):
                _log_eval(
                    reporter,
                    run,
                    state.step,
                    _evaluate(head, tokenizer, template, validation, config, accelerator),
                )
            if config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0:
                checkpointing.save(
                    work_dir,
                    step=state.step,
                    model=model,
                    masters=masters,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    state=state.__dict__,
                    process_index=accelerator.process_index,
                    is_main_process=is_main,
                    barrier=accelerator.wait_for_everyone,
                )
        progress.close()

        scores = (
            _evaluate(head, tokenizer, template, validation, config, accelerator)
            if validation is not None
            else {}
        )
        metrics = _metrics(config, state, encoded, scores, accelerator, wall_start)
        if is_main:
            with atomic_directory(output_dir) as tmp:
                accelerator.unwrap_model(head).model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
                write_manifest(
                    tmp,
                    config=config_to_dict(config),
                    inputs=_input_versions(config),
                    extra={"kind": "lora_adapter"},
                )
            checkpointing.clear(work_dir)
            if run is not None:
                metrics["wandb_url"] = run.get_url() or ""
                run.finish()
            reporter.report_materialization(_materialization_metadata(metrics, output_dir))
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return metrics


def _feature(input_ids: list[int], target: Any, label: str) -> dict[str, Any]:
    if label == "hard":
        return {"input_ids": input_ids, "label": int(target)}
    return {"input_ids": input_ids, "teacher_logits": [float(t) for t in target]}


def _evaluate(
    head: torch.nn.Module,
    tokenizer: Any,
    template: PromptTemplate,
    validation: Any,
    config: TrainConfig,
    accelerator: Accelerator,
) -> dict[str, float]:
    rows = validation if not config.max_validation_rows else validation.iloc[: config.max_validation_rows]
    head.eval()
    scores = evaluate_pairs(
        accelerator.unwrap_model(head),
        tokenizer,
        template,
        rows,
        max_length=config.max_length,
        rebalance=config.rebalance_truncation,
        batch_size=config.eval_batch_size,
        device=accelerator.device,
    )
    head.train()
    return scores


def _log_eval(reporter: Any, run: Any, step: int, scores: dict[str, float]) -> None:
    reporter.info(f"step {step} validation " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    if run is not None:
        run.log({f"val/{k}": v for k, v in scores.items()}, step=step)


def _metrics(
    config: TrainConfig,
    state: TrainState,
    encoded: Any,
    scores: dict[str, float],
    accelerator: Accelerator,
    wall_start: float,
) -> dict[str, Any]:
    tokens, seconds = (
        (state.timed_tokens, state.timed_seconds)
        if state.timed_seconds > 0
        else (state.tokens_processed, state.train_seconds)
    )
    tokens_per_second = tokens * accelerator.num_processes / max(seconds, 1e-9)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return {
        **{f"val_{k}": v for k, v in scores.items()},
        "train_loss_curve": state.loss_curve,
        "train_loss_final": state.loss_curve[-1][1] if state.loss_curve else float("nan"),
        "train_tokens_per_second": tokens_per_second,
        "padding_fraction": state.padded_tokens / max(state.tokens_processed, 1),
        "steps": state.step,
        "train_rows": len(encoded.input_ids),
        "num_processes": accelerator.num_processes,
        "wall_seconds": time.perf_counter() - wall_start,
        "peak_memory_gb": peak,
        **{f"train_{k}": v for k, v in encoded.length_report().items()},
    }


def _materialization_metadata(metrics: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    from arena_assets.ranker.pipes import path_value
    from arena_assets.ranker.plots import loss_curve_markdown

    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    metadata: dict[str, Any] = {
        **numbers,
        "adapter_dir": path_value(output_dir),
        "loss_curve": md(loss_curve_markdown(metrics["train_loss_curve"])),
    }
    if metrics.get("wandb_url"):
        metadata["wandb_url"] = {"raw_value": metrics["wandb_url"], "type": "url"}
    return metadata


def _input_versions(config: TrainConfig) -> dict[str, str]:
    from arena_assets.ranker.artifacts import file_sha256

    inputs = {"train": file_sha256(Path(config.train_path))}
    if config.validation_path:
        inputs["validation"] = file_sha256(Path(config.validation_path))
    return inputs


def _start_wandb(config: TrainConfig, is_main: bool) -> Any:
    if not (config.wandb and is_main):
        return None
    import wandb  # the API key comes from the environment (WANDB_API_KEY), never from the config

    return wandb.init(
        project=config.wandb_project,
        mode=config.wandb_mode,
        config=config_to_dict(config),
        name=config.wandb_run_name or None,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="TrainConfig as JSON or YAML")
    args = parser.parse_args(argv)
    train(load_config(TrainConfig, args.config))


if __name__ == "__main__":
    main()
