"""One typed config per ranker entry point; every default is defined here, once.

Defaults are the WSDM Cup 5th-place stage-1 recipe for Qwen2.5-14B-Instruct. A profile (arena_assets
settings) or a run config overrides fields by name. Config files are JSON or YAML with these field names.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

C = TypeVar("C")


@dataclass
class TrainConfig:
    """`python -m arena_assets.ranker.trainer --config F`: LoRA fine-tuning on the two letter logits."""

    # model
    backbone: str = ""
    output_dir: str = ""
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.01
    # A list (held as a tuple once built), so a command line gives `--lora_target_modules q_proj v_proj`.
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    random_init: bool = False  # benchmarks only: backbone from its config.json with random weights
    # data
    train_path: str = ""
    validation_path: str = ""
    label: Literal["hard", "soft"] = "hard"  # hard: `winner` column; soft: `teacher_logits` column
    temperature: float = 1.0  # soft labels: teacher softmax temperature
    max_length: int = 4096
    rebalance_truncation: bool = True  # hand budget that short fields leave unused to long ones
    group_by_length: bool = True
    # optimisation
    epochs: float = 1.0  # 0 with max_steps > 0: as many epochs as the steps need
    max_steps: int = 0  # > 0 stops after this many optimizer steps (smoke tests, benchmarks)
    global_batch_size: int = 16  # rows per optimizer step, swaps included
    per_device_batch_size: int = 2  # rows per forward pass; even, so a row and its swap share a batch
    # > 0: instead of per_device_batch_size rows, a forward pass takes whole swap pairs of similar length,
    # up to this many padded tokens (rows x longest row), so short rows share one; 2 x max_length keeps the
    # peak memory of two full-length rows. A step still holds global_batch_size rows.
    micro_batch_tokens: int = 0
    # A forward pass takes its rows end to end in one sequence: no padding, and the prefixes rows share
    # computed once by the linear layers: the system prompt all rows begin with, and the query a row shares
    # with its swap (ranker/packing.py).
    pack_sequences: bool = False
    lr_lora_a: float = 1e-5
    lr_lora_b: float = 5e-5
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    adam_eps: float = 1e-8
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"
    max_grad_norm: float = 16.0
    warmup_ratio: float = 0.02
    min_lr_ratio: float = 0.1
    # runtime
    seed: int = 42
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    gradient_checkpointing: float = 1.0  # share of decoder layers recomputed in backward, 0..1
    adapter_compute_dtype: bool = True  # LoRA matmuls in the compute dtype, fp32 master weights
    use_liger: Literal["auto", "on", "off"] = "auto"  # liger-kernel RMSNorm/SwiGLU/RoPE when installed
    # LoRA dropout keeps each adapter's input for backward and draws its mask again there, instead of a
    # dropped copy and a mask per projection (ranker/lora_dropout.py): the same numbers, less memory.
    recompute_lora_dropout: bool = True
    # With it, on a GPU: the dropout mask drawn inside lora_A's matmul kernels and never written (Triton,
    # ranker/fused_dropout.py); each element kept with the same probability, from another random stream.
    fused_lora_dropout: bool = True
    # lora_B's matmul adds the scaled update to the projection's output in its epilogue (torch.addmm) instead
    # of peft's product, scaled copy and sum (ranker/lora_output.py): less memory traffic, one rounding.
    lora_update_in_matmul: bool = True
    # In layers that are not recomputed, backward rebuilds the RMSNorm outputs and the SwiGLU product (one
    # elementwise kernel each, from tensors it keeps anyway) instead of keeping them for lora_A's weight
    # gradients (ranker/rebuilt_activations.py): the same numbers, a third less activation memory. lora_A's
    # dropout functions keep the rebuild, so it takes lora_dropout > 0 with recompute_lora_dropout.
    rebuild_activations: bool = True
    # The last decoder layer's queries, output projection and MLP computed only at each row's last token,
    # the one the letter head reads (ranker/head_rows.py): 2% fewer matmuls at 48 layers, the same logits up
    # to summation order. With LoRA dropout the read rows draw other masks of the same keep probability.
    head_rows_only: bool = True
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    # torch.compile each decoder layer (one compiled graph serves all of them): fuses the elementwise work
    # around the matmuls, LoRA's included. The first steps pay the compilation (tens of seconds).
    compile_layers: bool = False
    # On one GPU: a pass over rows of one length (no padding, not packed) captured once as a CUDA graph and
    # replayed for every pass of its shape, one launch instead of thousands (ranker/cuda_graphs.py). Takes
    # no recomputed layers and LoRA dropout in the fused kernels; padded passes still run eagerly.
    cuda_graphs: bool = False
    # The frozen projections' forward and input gradient in float8 e4m3 (ranker/fp8.py; a GPU with fp8
    # tensor cores, or the CPU): faster matmuls; the loss moves by e4m3's rounding. LoRA stays in bf16.
    fp8_matmuls: bool = False
    # With fp8_matmuls: the forward in e4m3 as well. False keeps the forward, and so the loss, in the compute
    # dtype and puts only the input gradient in e4m3: about half the speed-up, for the bf16 weights kept
    # beside one e4m3 copy (ranker/fp8.py).
    fp8_forward: bool = True
    # With it: the first fp8_check_passes micro-batches run forward and backward before and after the
    # quantization, with the same dropout masks; the run stops unless LoRA's gradient keeps a cosine of at
    # least fp8_min_grad_cosine with the full-precision one (the figures land in the metrics as fp8_*).
    fp8_check_passes: int = 2
    fp8_min_grad_cosine: float = 0.9
    # With several processes: shard backbone, adapters, gradients and optimizer state over them (FSDP2,
    # ranker/sharding.py) instead of a whole model per process (DDP). For a backbone too large for one GPU.
    fsdp: bool = False
    checkpoint_every_steps: int = 0  # 0: no checkpoints by step count
    checkpoint_every_minutes: float = 0.0  # 0: none by time; several processes follow rank 0's clock
    eval_every_steps: int = 0  # 0: validate only at the end
    eval_batch_size: int = 16
    max_validation_rows: int = 0  # 0: all
    resume: bool = True  # continue from the last checkpoint in output_dir's work directory
    log_every_steps: int = 10
    # set: after two steps, record profile_steps optimizer steps with torch.profiler into this directory
    # (a trace, each operator's time, and the time per step by kind of work; ranker/profiling.py)
    profile_dir: str = ""
    profile_steps: int = 2
    wandb: bool = False
    wandb_project: str = "arena-assets"
    wandb_mode: Literal["online", "offline"] = "online"
    wandb_run_name: str = ""

    def __post_init__(self) -> None:
        self.lora_target_modules = tuple(self.lora_target_modules)  # type: ignore[assignment]
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]
        _require(len(self.adam_betas) == 2, "adam_betas holds two numbers")
        _require(
            self.per_device_batch_size > 0 and self.per_device_batch_size % 2 == 0,
            "per_device_batch_size must be a positive even number (a row and its swap share a batch)",
        )
        _require(
            self.micro_batch_tokens > 0 or self.global_batch_size % self.per_device_batch_size == 0,
            "global_batch_size must be a multiple of per_device_batch_size",
        )
        _require(
            self.global_batch_size > 0 and self.global_batch_size % 2 == 0,
            "global_batch_size must be a positive even number (whole swap pairs)",
        )
        _require(0.0 <= self.gradient_checkpointing <= 1.0, "gradient_checkpointing is a share in [0, 1]")
        _require(self.fp8_matmuls or self.fp8_forward, "fp8_forward: false says which fp8 matmuls run: it "
                 "takes fp8_matmuls: true")
        _require(self.fp8_check_passes >= 0, "fp8_check_passes must be 0 (no check) or more")
        _require(-1.0 <= self.fp8_min_grad_cosine <= 1.0, "fp8_min_grad_cosine is a cosine, -1 to 1")
        _require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)")
        _require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]")
        _require(self.max_length >= 64, "max_length must be at least 64 tokens")
        _require(self.micro_batch_tokens >= 0, "micro_batch_tokens must not be negative (0: off)")
        _require(self.epochs > 0 or self.max_steps > 0, "set epochs > 0 or max_steps > 0")
        _require(self.epochs >= 0, "epochs must not be negative")
        _require(self.temperature > 0, "temperature must be positive")
        _require(self.checkpoint_every_minutes >= 0, "checkpoint_every_minutes must not be negative")
        _require(self.profile_steps > 0, "profile_steps must be positive (profile_dir empty: no profile)")

    def accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches per optimizer step on each process."""
        per_step = self.per_device_batch_size * num_processes
        _require(
            self.global_batch_size % per_step == 0,
            f"global_batch_size {self.global_batch_size} is not a multiple of "
            f"per_device_batch_size x processes = {per_step}",
        )
        return self.global_batch_size // per_step


@dataclass
class MergeConfig:
    """`python -m arena_assets.ranker.merger --config F`: adapter merged into the backbone."""

    backbone: str = ""
    adapter_dir: str = ""
    output_dir: str = ""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where native, fp16 on older GPUs
    device_map: Literal["single", "auto"] = "single"  # auto: a backbone too large for one GPU across all
    max_length: int = 4096
    probe_path: str = ""  # parquet of pairs for the parity probe; empty: built-in multilingual probe
    probe_rows: int = 8
    parity_atol: float = 0.0  # 0: a precision-dependent default (1e-4 fp32, 0.15 bf16)
    max_shard_size: str = "5GB"


@dataclass
class ScoreConfig:
    """`python -m arena_assets.ranker.scorer --config F`: A/B logits for a parquet of pairs, both orders."""

    model: str = ""  # merged model directory (or a backbone, with adapter_dir)
    adapter_dir: str = ""  # optional: score an unmerged adapter
    random_init: bool = False  # benchmarks only: model from its config.json with random weights
    input_path: str = ""
    id_column: str = "id"  # unique row key copied to the output's `id` column
    output_dir: str = ""
    max_length: int = 4096
    rebalance_truncation: bool = True
    both_orders: bool = True
    token_budget: int = 16384  # padded tokens per batch (packed: row tokens per forward pass)
    max_batch_rows: int = 64
    # Both orders of a pair end to end in one sequence, no padding, the prefixes rows share computed once by
    # the linear layers: the system prompt, once a pass; the query, once a pair (ranker/packing.py).
    pack_sequences: bool = False
    # Packed passes' attention through SDPA on whole rows (ranker/packing.py's `row_attention`): each row
    # gathered into a batch as wide as the pass's longest rounded up to this multiple, as many rows as fit
    # token_budget at that width, so shapes repeat (cuDNN builds a plan for each new one). 0: PyTorch's
    # varlen flash kernel on the packed rows. On an H200 cuDNN's kernel is about twice the varlen one, but
    # the gathers take much of that back: 256 gave +2.3% with fp8_matmuls and +0.5% in bf16.
    sdpa_row_multiple: int = 0
    rows_per_shard: int = 2048
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where native, fp16 on older GPUs
    # auto: one process spreads a model too large for one GPU over all of them (layer by layer, no grads)
    device_map: Literal["single", "auto"] = "single"
    use_liger: Literal["auto", "on", "off"] = "auto"
    # The last decoder layer's queries, output projection and MLP at each row's last token only, the one the
    # letter head reads (ranker/head_rows.py): the same logits up to summation order, 2% fewer matmuls.
    head_rows_only: bool = True
    # Each layer's attention output and MLP projections accumulate into the residual stream in their matmuls
    # (ranker/residual_matmul.py): no separate add kernels; the sum rounded once instead of twice.
    residual_in_matmul: bool = True
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    # The decoder's linear layers in float8 e4m3 (ranker/fp8.py; a GPU with fp8 tensor cores, or the CPU):
    # weights per output channel, inputs per token. Faster; the logits move by e4m3's rounding.
    fp8_matmuls: bool = False
    # With it: the first rows scored in full precision and in fp8 before the run; it stops unless the winner
    # stays for at least fp8_min_same_winner of them (the figures land in the metrics as fp8_*).
    fp8_check_rows: int = 256
    fp8_min_same_winner: float = 0.95
    # set: after two forward passes, record profile_passes of them with torch.profiler into this directory
    # (ranker/profiling.py; the metrics carry the time per pass by kind of work as profile_*)
    profile_dir: str = ""
    profile_passes: int = 2

    def __post_init__(self) -> None:
        _require(self.token_budget >= self.max_length, "token_budget must hold at least one max_length row")
        _require(self.rows_per_shard > 0, "rows_per_shard must be positive")
        _require_row_attention(self.sdpa_row_multiple, pack_sequences=self.pack_sequences)
        _require(self.fp8_check_rows >= 0, "fp8_check_rows must be 0 (no check) or more")
        _require(0.0 <= self.fp8_min_same_winner <= 1.0, "fp8_min_same_winner is a share, 0 to 1")


@dataclass
class PredictConfig:
    """`python -m arena_assets.ranker.predict --config F`: winner probabilities from a merged model.

    Test-time augmentation as the top WSDM solutions ran it: every row in one order, then the swapped order
    for the least certain rows (smallest |p(A) - p(B)| first) until `tta_share` of the rows or `tta_seconds`
    run out; those rows average both orders.
    """

    model: str = ""  # merged model directory (what final_model writes); any Qwen2/Llama-style causal LM
    random_init: bool = False  # benchmarks only: model from its config.json with random weights
    input_path: str = ""  # parquet or CSV with id_column, prompt, response_a, response_b
    id_column: str = "id"
    output_path: str = ""  # CSV: id, prob_a, prob_b, winner, both_orders
    submission_path: str = ""  # optional: Kaggle `id,winner` CSV beside it
    metrics_path: str = ""  # optional: what the run measured (rows, tokens, seconds, rates) as JSON
    max_length: int = 0  # 0: the max length the model was trained with (its ranker.json)
    rebalance_truncation: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where native, fp16 on older GPUs
    device_map: Literal["single", "auto"] = "single"  # auto: split a model too large for one GPU across all
    token_budget: int = 16384  # padded tokens per batch (packed: row tokens per forward pass)
    max_batch_rows: int = 64
    # Rows end to end in one sequence, no padding, the system prompt computed once a pass (ranker/packing.py;
    # on a GPU PyTorch's varlen flash kernel: PyTorch 2.10 or later, an Ampere or later GPU).
    pack_sequences: bool = False
    sdpa_row_multiple: int = 0  # packed passes' attention on whole rows through SDPA (see ScoreConfig)
    use_liger: Literal["auto", "on", "off"] = "auto"  # liger-kernel's RMSNorm, SwiGLU and RoPE (GPU only)
    # The last decoder layer's queries, output projection and MLP at each row's last token only, the one the
    # letter head reads (ranker/head_rows.py): the same logits up to summation order, 2% fewer matmuls.
    head_rows_only: bool = True
    residual_in_matmul: bool = True  # the residual added inside the output matmuls (see ScoreConfig)
    tta_share: float = 1.0  # share of rows, least certain first, that are also scored swapped (0: none)
    tta_seconds: float = 0.0  # time budget for the swapped pass (0: none)

    def __post_init__(self) -> None:
        _require(0.0 <= self.tta_share <= 1.0, "tta_share is a share in [0, 1]")
        _require(self.tta_seconds >= 0, "tta_seconds must not be negative")
        _require(self.token_budget >= self.max_length, "token_budget must hold at least one max_length row")
        _require_row_attention(self.sdpa_row_multiple, pack_sequences=self.pack_sequences)


@dataclass
class Stage2DatasetConfig:
    """Teacher logits for stage 2: human labels at fixed confidence, open-model pairs from stage 1."""

    hard_label_train_path: str = ""
    soft_logits_path: str = ""  # scorer output for the open-model pairs
    open_pairs_path: str = ""  # canonical open-model pairs (prompt and responses)
    validation_path: str = ""  # open-model pairs whose prompt is in this split are left out (leakage)
    output_dir: str = ""  # writes stage2.parquet and manifest.json
    human_label_confidence: float = 0.95

    def __post_init__(self) -> None:
        _require(0.5 < self.human_label_confidence < 1.0, "human_label_confidence must be in (0.5, 1)")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_row_attention(sdpa_row_multiple: int, *, pack_sequences: bool) -> None:
    _require(sdpa_row_multiple >= 0, "sdpa_row_multiple must be 0 (varlen attention) or more")
    _require(
        not sdpa_row_multiple or pack_sequences,
        "sdpa_row_multiple is how packed passes attend: set pack_sequences true, or sdpa_row_multiple 0",
    )


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build `cls` from a dict, rejecting unknown keys with the list of valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; valid fields: {sorted(names)}")
    return cls(**values)


def load_config(cls: type[C], path: str | Path) -> C:
    """Read a JSON or YAML config file into `cls`."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in {".yaml", ".yml"}:
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    try:
        return config_from_dict(cls, values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


def save_config(config: Any, path: str | Path) -> Path:
    """Write a config dataclass as JSON (atomically) and return the path."""
    from arena_assets.ranker.artifacts import atomic_write_text

    atomic_write_text(Path(path), json.dumps(config_to_dict(config), indent=2))
    return Path(path)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a config dataclass (for building run-config schemas)."""
    return typing.get_type_hints(cls)


def field_defaults(cls: type) -> dict[str, Any]:
    """Default value of every field of a config dataclass."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return out


__all__ = [
    "LORA_TARGETS",
    "MergeConfig",
    "PredictConfig",
    "ScoreConfig",
    "Stage2DatasetConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "field_defaults",
    "field_types",
    "load_config",
    "save_config",
]
