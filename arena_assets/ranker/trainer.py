"""LoRA fine-tuning of the A/B letter logits: stage 1 (hard labels) and stage 2 (soft labels).

    accelerate launch -m arena_assets.ranker.trainer --config train.json
    python -m arena_assets.ranker.trainer --config train.json          # one process

Reads a training parquet whose rows come in (original, A/B swap) pairs and writes a peft adapter directory
(atomically, with `metrics.json` and `manifest.json`) once everything else has succeeded. Checkpoints go
to `<output_dir>.work/`; a rerun resumes from the newest one when its fingerprint (result-changing config,
inputs, backbone, code, process count) matches, and starts fresh otherwise. Only rank 0 writes files and
reports to Dagster.

The recipe, in the order a run happens: `setup` (data, model, optimizer, schedule, resume), `fit` (the
optimizer steps, with checkpoints), then `evaluate` (both orders of the validation rows) and `save`, which
live in train_outputs.py with the rest of what a run leaves behind.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast, set_seed
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from arena_assets.ranker import checkpointing, out_of_memory
from arena_assets.ranker.cli_args import parse_config
from arena_assets.ranker.collate import collate_rows, collate_targets, plan_steps, shard_batches, to_device
from arena_assets.ranker.config import TrainConfig
from arena_assets.ranker.cuda_graphs import GraphedPasses, check_graphable
from arena_assets.ranker.data import (
    EncodedRows,
    check_swap_pairs,
    encode_frame,
    hard_labels,
    read_pairs,
    teacher_logits,
)
from arena_assets.ranker.fp8 import gradient_agreement, require_fp8
from arena_assets.ranker.head import LetterHead
from arena_assets.ranker.losses import hard_label_loss, soft_label_loss
from arena_assets.ranker.modeling import (
    MasterWeights,
    build_model,
    build_optimizer,
    fast_path_report,
    finish_model,
)
from arena_assets.ranker.packing import pack_rows
from arena_assets.ranker.pipes import Reporter, pipes_reporter
from arena_assets.ranker.profiling import StepProfiler
from arena_assets.ranker.prompt import PromptTemplate, load_tokenizer
from arena_assets.ranker.sharding import full_trainable_state, gradient_sync, is_sharded, shard_letter_head
from arena_assets.ranker.train_outputs import evaluate, log_scores, metrics_of, save, start_wandb


@dataclass
class TrainState:
    """What a checkpoint restores besides weights: the step and the loss curve so far."""

    step: int = 0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    row_tokens: int = 0  # the rows' own tokens (what throughput counts)
    tokens_processed: int = 0  # positions the forward passes computed: row tokens + padding - shared
    padded_tokens: int = 0
    shared_tokens: int = 0  # packed rows: row tokens of shared prefixes, computed once for several rows
    train_seconds: float = 0.0
    # Throughput excludes each process's first step (kernel selection, allocator warm-up).
    timed_tokens: int = 0
    timed_seconds: float = 0.0


@dataclass
class Run:
    """Everything `setup` builds and the later phases use."""

    config: TrainConfig
    accelerator: Accelerator
    reporter: Reporter
    tokenizer: Any
    template: PromptTemplate
    encoded: EncodedRows
    targets: np.ndarray
    validation: pd.DataFrame | None
    model: PeftModel
    head: torch.nn.Module
    dtype: torch.dtype
    trainable: list[tuple[str, torch.nn.Parameter]]
    masters: MasterWeights | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps: list[list[list[int]]]
    total_steps: int
    work_dir: Path
    graphs: GraphedPasses | None = None
    fp8_check: dict[str, float] = field(default_factory=dict)
    state: TrainState = field(default_factory=TrainState)
    wandb_run: Any = None
    profile_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def setup(config: TrainConfig, accelerator: Accelerator, reporter: Reporter) -> Run:
    """Data, model, optimizer and schedule; resumed from the work directory when it is this run's."""
    tokenizer = load_tokenizer(config.backbone)
    template = PromptTemplate.from_tokenizer(tokenizer)
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

    if config.fp8_matmuls and accelerator.num_processes > 1:
        # DDP would broadcast the e4m3 weights (module buffers) before every forward pass, and FSDP would
        # not shard them; neither is built or measured.
        raise ValueError(
            f"fp8_matmuls trains in one process (this run has {accelerator.num_processes}): launch one "
            "process, or set fp8_matmuls to false"
        )
    if config.fp8_matmuls:
        require_fp8(accelerator.device)  # before the model loads
    check_fp8 = config.fp8_matmuls and config.fp8_check_passes > 0
    model, dtype = build_model(config, accelerator.device, finish=not check_fp8)  # else the check finishes it
    head = LetterHead(model, template.letter_ids, head_rows_only=config.head_rows_only)
    if config.fsdp and accelerator.num_processes > 1:
        head = shard_letter_head(head)
    else:
        head = accelerator.prepare(head)
    # After sharding: under FSDP these are this rank's DTensor shards, which the masters copy locally.
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sharded = is_sharded(head)
    masters = MasterWeights(trainable) if sharded or trainable[0][1].dtype != torch.float32 else None
    optimizer = build_optimizer(config, masters.named_parameters() if masters else trainable)
    steps = plan_steps(config, encoded.lengths, num_processes=accelerator.num_processes)
    total_steps = min(len(steps), config.max_steps) if config.max_steps > 0 else len(steps)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
        min_lr_rate=config.min_lr_ratio,
    )
    output_dir = Path(config.output_dir)
    run = Run(
        config=config, accelerator=accelerator, reporter=reporter, tokenizer=tokenizer, template=template,
        encoded=encoded, targets=targets, validation=validation, model=model,
        head=head, dtype=dtype, trainable=trainable,
        masters=masters, optimizer=optimizer, scheduler=scheduler, steps=steps, total_steps=total_steps,
        work_dir=output_dir.with_name(output_dir.name + ".work"),
    )  # fmt: skip
    if check_fp8:  # its passes take training's memory: the first place a run can run out
        with out_of_memory.explained(config, "the fp8 check before training", accelerator.device):
            run.fp8_check = finish_with_fp8_check(run)
        reporter.info(f"fp8 matmuls: {run.fp8_check}")
    if config.cuda_graphs:
        check_graphable(config, accelerator.device, accelerator.num_processes, model)
        run.graphs = GraphedPasses(
            lambda input_ids, targets: pass_loss(run, run.head(input_ids, None), targets),
            [p for _, p in trainable],
        )
    resume(run)
    per_forward = (f"up to {config.micro_batch_tokens} padded tokens" if config.micro_batch_tokens
                   else f"{config.per_device_batch_size} rows")  # fmt: skip
    reporter.info(
        f"{total_steps} optimizer steps of {config.global_batch_size} rows, micro-batches of {per_forward} "
        f"on {accelerator.num_processes} process(es) "
        f"({'FSDP, sharded' if sharded else 'DDP' if accelerator.num_processes > 1 else 'one process'}); "
        + fast_path_report(model, config, dtype)
    )
    return run


def finish_with_fp8_check(run: Run) -> dict[str, float]:
    """Quantize the frozen projections to fp8 (`finish_model`), having run the first `fp8_check_passes`
    micro-batches forward and backward before and after, from one random state (the same dropout masks).

    Raises when LoRA's gradient after the quantization keeps a cosine below `fp8_min_grad_cosine` with the
    one before: then e4m3's rounding moves this model's training too far to trust."""
    config, device = run.config, run.accelerator.device
    batches = [rows for step in run.steps for rows in step][: config.fp8_check_passes]
    passes = [
        micro_batch(run, [feature(run.encoded.input_ids[r], run.targets[r], config.label) for r in rows])
        for rows in batches
    ]
    run.state = TrainState()  # micro_batch counted the passes' tokens: they are not training's

    def loss_and_gradient() -> tuple[float, torch.Tensor]:
        mean_loss = torch.zeros((), device=device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            for inputs, targets in passes:
                loss = pass_loss(run, run.head(*inputs), targets) / len(passes)
                run.accelerator.backward(loss)
                mean_loss += loss.detach()
        # Each to the CPU before anything is joined: the check must not take more GPU memory than training
        # (LoRA's fp32 gradient of the 14B backbone is 1.1 GB).
        gradient = torch.cat([p.grad.flatten().cpu() for _, p in run.trainable]).float()
        for _, p in run.trainable:
            p.grad = None
        return float(mean_loss), gradient

    run.head.train()  # dropout and recompute as in training
    before = loss_and_gradient()
    finish_model(config, run.model, device)
    after = loss_and_gradient()
    check = {"check_passes": len(passes), "loss_full": before[0], "loss": after[0],
             **gradient_agreement(before[1], after[1])}  # fmt: skip
    if check["grad_cosine"] < config.fp8_min_grad_cosine:
        raise ValueError(
            f"fp8_matmuls: on the first {len(passes)} micro-batches of {config.train_path}, LoRA's gradient "
            f"with fp8 matmuls has a cosine of {check['grad_cosine']:.3f} with the full-precision one "
            f"(fp8_min_grad_cosine {config.fp8_min_grad_cosine}; loss {check['loss']:.4f} against "
            f"{check['loss_full']:.4f}): train this model without fp8_matmuls"
        )
    return check


def resume(run: Run) -> None:
    """Claim the work directory for this run's fingerprint and restore its newest checkpoint, if any."""
    config, accelerator = run.config, run.accelerator
    if not (config.resume and (config.checkpoint_every_steps or config.checkpoint_every_minutes)):
        return
    checkpointing.claim(
        run.work_dir,
        checkpointing.fingerprint(config, accelerator.num_processes),
        is_main_process=run.is_main,
        barrier=accelerator.wait_for_everyone,
        log=run.reporter.warning,
    )
    restored = checkpointing.load_latest(
        run.work_dir,
        model=run.model,
        masters=run.masters,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        process_index=accelerator.process_index,
        sharded=is_sharded(run.head),
    )
    if restored is not None:
        run.state = TrainState(**restored)
        run.reporter.info(f"resumed from step {run.state.step} of {run.total_steps}")


def fit(run: Run) -> None:
    """Run the optimizer steps from the current state to the last, logging and checkpointing on the way.

    No step waits for the GPU: losses and the gradient norm stay on the device until a log line, an
    evaluation or a checkpoint reads them, so the CPU prepares and queues the next step while the GPU runs
    this one."""
    config, state = run.config, run.state
    run.wandb_run = start_wandb(config, run.is_main)
    progress = tqdm(total=run.total_steps, initial=state.step, disable=not run.is_main, desc="train")
    run.head.train()
    first_step = state.step
    last_checkpoint = time.monotonic()
    clock = StepClock(run.accelerator.device)
    pending: list[tuple[int, torch.Tensor]] = []  # (step, mean loss on the device), not yet in the curve
    # Rank 0 alone profiles: the ranks run the same kernels, and one directory holds one trace.
    profile_dir = config.profile_dir if run.is_main else ""
    with StepProfiler(profile_dir, steps=config.profile_steps, lora_r=config.lora_r) as profiler:
        while state.step < run.total_steps:
            step_start = time.perf_counter()
            with out_of_memory.explained(config, f"step {state.step + 1} of {run.total_steps}",
                                         run.accelerator.device):  # fmt: skip
                step_loss, step_tokens, grad_norm = train_step(run, run.steps[state.step])
            state.step += 1
            state.train_seconds += time.perf_counter() - step_start
            profiler.step()
            if state.step == first_step + 1:
                clock.start()  # throughput leaves out the first step (kernel selection, allocator growth)
            else:
                state.timed_tokens += step_tokens
            pending.append((state.step, run.accelerator.reduce(step_loss, reduction="mean")))
            progress.update(1)
            if state.step % config.log_every_steps == 0 or state.step == run.total_steps:
                record_losses(state, pending)
                log_step(run, state.loss_curve[-1][1], float(grad_norm))
            eval_due = config.eval_every_steps and state.step % config.eval_every_steps == 0
            if eval_due and run.validation is not None:
                state.timed_seconds += clock.stop()
                log_scores(run, evaluate(run))
                clock.start()
            if checkpoint_due(run, last_checkpoint):
                state.timed_seconds += clock.stop()
                record_losses(state, pending)
                save_checkpoint(run)
                last_checkpoint = time.monotonic()
                clock.start()
    state.timed_seconds += clock.stop()
    record_losses(state, pending)
    run.profile_summary = profiler.summary
    progress.close()


class StepClock:
    """Seconds of training steps, read after the GPU finished them: the CPU queues steps ahead of the
    GPU, so a clock read without waiting would count work that has not run yet."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.started: float | None = None

    def start(self) -> None:
        self._wait_for_device()
        self.started = time.perf_counter()

    def stop(self) -> float:
        """Seconds since `start` (0 when not started); stops the clock."""
        if self.started is None:
            return 0.0
        self._wait_for_device()
        elapsed, self.started = time.perf_counter() - self.started, None
        return elapsed

    def _wait_for_device(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def record_losses(state: TrainState, pending: list[tuple[int, torch.Tensor]]) -> None:
    """Move the steps' losses from the device into the loss curve (one wait for the GPU for all)."""
    if pending:
        values = torch.stack([loss for _, loss in pending]).tolist()
        steps = [step for step, _ in pending]
        state.loss_curve.extend((step, round(value, 6)) for step, value in zip(steps, values, strict=True))
        pending.clear()


def log_step(run: Run, mean_loss: float, grad_norm: float) -> None:
    lr = run.scheduler.get_last_lr()[-1]
    step = run.state.step
    run.reporter.info(
        f"step {step}/{run.total_steps} loss {mean_loss:.4f} grad_norm {grad_norm:.3f} lr {lr:.2e}"
    )
    if run.wandb_run is not None:
        run.wandb_run.log({"train/loss": mean_loss, "train/grad_norm": grad_norm, "train/lr": lr}, step=step)


def save_checkpoint(run: Run) -> None:
    checkpointing.save(
        run.work_dir,
        step=run.state.step,
        model=run.model,
        masters=run.masters,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        state=dataclasses.asdict(run.state),
        process_index=run.accelerator.process_index,
        is_main_process=run.is_main,
        barrier=run.accelerator.wait_for_everyone,
        sharded=is_sharded(run.head),
    )


def train_step(run: Run, step_batches: list[list[int]]) -> tuple[torch.Tensor, int, torch.Tensor]:
    """One optimizer step over this process's micro-batches; returns (mean loss, tokens, grad norm), the
    loss and the norm on the device."""
    config, accelerator = run.config, run.accelerator
    lengths = run.encoded.lengths
    mine = shard_batches(
        step_batches,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        costs=[len(rows) * max(lengths[r] for r in rows) for rows in step_batches],  # padded tokens
    )
    # DDP averages gradients over processes, so each weighs its rows against the step's rows per process:
    # the gradient is the mean over all the step's rows even where a short batch leaves the processes
    # unequal rows, as with one process.
    step_rows = sum(len(rows) for rows in step_batches) / accelerator.num_processes
    step_loss = torch.zeros((), device=accelerator.device)
    row_tokens_before = run.state.row_tokens
    for index, rows in enumerate(mine):
        features = [feature(run.encoded.input_ids[r], run.targets[r], config.label) for r in rows]
        inputs, targets = micro_batch(run, features)
        # Gradients are all-reduced once per optimizer step, on the last micro-batch.
        sync = index == len(mine) - 1
        with gradient_sync(run.head, sync):
            weight = len(rows) / step_rows
            if run.graphs is not None and inputs[1] is None:  # rows of one length: a captured pass
                loss = run.graphs(inputs[0], targets, weight)
            else:
                loss = pass_loss(run, run.head(*inputs), targets)
                accelerator.backward(loss * weight)
                # Its value only: kept with its autograd graph, the pass's AccumulateGrad nodes (made on the
                # default stream) would live on into a capture later in this step, whose backward fails
                # on them (ranker/cuda_graphs.py).
                loss = loss.detach()
        step_loss += loss * weight
    if run.masters is not None:
        run.masters.grads_to_master()
        grad_norm = run.masters.clip_grad_norm_(config.max_grad_norm)
    else:
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in run.trainable], config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.masters is not None:
        run.masters.master_to_model()
    if run.graphs is not None:
        run.graphs.reset_grads()
    return step_loss, run.state.row_tokens - row_tokens_before, grad_norm


def pass_loss(run: Run, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """A forward pass's mean loss against its targets (hard labels or teacher logits)."""
    if run.config.label == "hard":
        return hard_label_loss(logits, targets["labels"])
    return soft_label_loss(logits, targets["teacher_logits"], temperature=run.config.temperature)


def micro_batch(run: Run, features: list[dict[str, Any]]) -> tuple[tuple[Any, Any], dict[str, torch.Tensor]]:
    """A forward pass's inputs (padded rows and their mask, or packed rows and their layout) and its
    targets, on the device; counts its row tokens and positions in the run's state."""
    state, device = run.state, run.accelerator.device
    ids = [f["input_ids"] for f in features]
    row_tokens = sum(len(row) for row in ids)
    state.row_tokens += row_tokens
    if run.config.pack_sequences:
        tokens, layout = pack_rows(ids, share_pair_prefix=True)
        state.tokens_processed += len(tokens)
        state.shared_tokens += layout.shared_tokens
        inputs = (to_device(torch.tensor([tokens]), device), layout.to(device))
        targets = collate_targets(features)
    else:
        batch = collate_rows(features, pad_token_id=run.tokenizer.pad_token_id)
        state.tokens_processed += batch["input_ids"].numel()
        state.padded_tokens += batch["input_ids"].numel() - row_tokens
        mask = batch.pop("attention_mask")
        # Rows of one length need no mask: the attention runs causally by itself (and the pass can be
        # replayed from a CUDA graph).
        one_length = len({len(row) for row in ids}) == 1
        inputs = (to_device(batch.pop("input_ids"), device), None if one_length else to_device(mask, device))
        targets = batch
    return inputs, {k: to_device(v, device) for k, v in targets.items()}


def checkpoint_due(run: Run, last_checkpoint: float) -> bool:
    """Whether to checkpoint after this step: every N steps, or every N minutes by rank 0's clock."""
    config = run.config
    if config.checkpoint_every_steps and run.state.step % config.checkpoint_every_steps == 0:
        return True
    if not config.checkpoint_every_minutes or run.state.step == run.total_steps:
        return False
    due = (time.monotonic() - last_checkpoint) / 60 >= config.checkpoint_every_minutes
    if run.accelerator.num_processes == 1:
        return due
    # Every rank must take part in a checkpoint, so all follow rank 0's clock.
    return bool(broadcast(torch.tensor([float(due)], device=run.accelerator.device), from_process=0).item())


def feature(input_ids: list[int], target: Any, label: str) -> dict[str, Any]:
    """One row for the collator: token ids and its hard label or teacher logits."""
    if label == "hard":
        return {"input_ids": input_ids, "label": int(target)}
    return {"input_ids": input_ids, "teacher_logits": [float(t) for t in target]}


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns the metrics written to `metrics.json`."""
    # Precision is the ranker's own (weights loaded in the compute dtype), not accelerate's autocast.
    accelerator = Accelerator(mixed_precision="no")
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError(
            "the trainer shards with torch's FSDP2 itself (arena_assets/ranker/sharding.py), not with "
            "accelerate's FSDP plugin: launch it like DDP (--num_processes N, or "
            "configs/accelerate/ddp.yaml) and set fsdp: true in the training config"
        )
    set_seed(config.seed)
    with pipes_reporter(is_main_process=accelerator.is_main_process) as reporter:
        wall_start = time.perf_counter()
        run = setup(config, accelerator, reporter)
        fit(run)
        metrics = metrics_of(run, evaluate(run), wall_start)
        adapter_state = full_trainable_state(run.model)  # every rank: a collective under FSDP
        if run.is_main:
            save(run, metrics, adapter_state)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return metrics


def main(argv: list[str] | None = None) -> None:
    train(parse_config(TrainConfig, argv, description=__doc__))


if __name__ == "__main__":
    main()
