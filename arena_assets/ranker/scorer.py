"""A/B letter logits for a parquet of pairs, in both orders, with no gradients.

    accelerate launch -m arena_assets.ranker.scorer --config score.json
    python -m arena_assets.ranker.scorer --config score.json

Writes the directory `<output_dir>` (atomically, once every shard is done) holding `logits.parquet` with
`id, a_logit, b_logit, a_logit_swapped, b_logit_swapped` (the swapped columns are the letter logits when
response_b is shown as A: `a_logit_swapped` is evidence for the original response_b), `metrics.json` and
`manifest.json`. Rows are scored in shards of `rows_per_shard` under `<output_dir>.work/`, each written
atomically and kept, so a killed or repeated run scores only what is missing; a shard is reused only for the
same rows (its file name holds a hash of their text) under the same model, adapter, scoring config and
code, never across models. Rows appended to the input (a new open-model file) score only the new shards.
With several processes, shard k belongs to rank k mod N; rank 0 merges the shards.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator

from arena_assets.ranker import checkpointing
from arena_assets.ranker.artifacts import (
    LOGIT_COLUMNS,
    LOGITS_NAME,
    METRICS_NAME,
    atomic_directory,
    atomic_write_parquet,
    model_identity,
    ranker_code_version,
    write_manifest,
)
from arena_assets.ranker.cli_args import parse_config
from arena_assets.ranker.config import ScoreConfig, config_to_dict
from arena_assets.ranker.data import PAIR_COLUMNS, encode_frame, read_pairs
from arena_assets.ranker.fp8 import margin_agreement, quantize_linears, require_fp8
from arena_assets.ranker.head import LetterHead, padded_tokens, score_packed, score_sequences
from arena_assets.ranker.head_rows import watches_head_rows
from arena_assets.ranker.modeling import decoder_layers, load_backbone, peak_memory_gb, resolve_dtype
from arena_assets.ranker.pipes import path_value, pipes_reporter
from arena_assets.ranker.profiling import StepProfiler, summary_metrics
from arena_assets.ranker.prompt import PromptTemplate, letter_token_ids, load_tokenizer
from arena_assets.ranker.residual_matmul import adds_residual_in_matmuls


def load_scoring_head(
    config: ScoreConfig, device: torch.device, *, quantize: bool = True
) -> tuple[LetterHead, Any, torch.device]:
    """The model (merged, or backbone plus adapter) as a letter head in eval mode, its tokenizer, and the
    device its inputs go to (the first GPU of a device map). With fp8_matmuls its linear layers are quantized,
    unless `quantize` is off (the caller quantizes after scoring rows in full precision to compare)."""
    tokenizer = load_tokenizer(config.adapter_dir or config.model)
    spread = config.device_map == "auto" and device.type == "cuda"
    model = load_backbone(
        config.model,
        dtype=resolve_dtype(config.precision, device),
        device=device,
        attn_implementation=config.attn_implementation,
        use_liger=config.use_liger,
        random_init=config.random_init,
        device_map="auto" if spread else None,
        packed=config.pack_sequences,
    )
    if config.adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, config.adapter_dir)
    if config.fp8_matmuls:
        require_fp8(device)
        if config.adapter_dir:
            model = model.merge_and_unload()  # the adapter's update inside the weights that are quantized
        if quantize:
            quantize_linears(decoder_layers(model))
    head = LetterHead(
        model,
        letter_token_ids(tokenizer),
        head_rows_only=config.head_rows_only,
        residual_in_matmul=config.residual_in_matmul,
    ).eval()
    return head, tokenizer, model.get_input_embeddings().weight.device


def scoring_path_report(head: LetterHead, config: ScoreConfig) -> str:
    """One log line saying how the scorer's passes run: rows, attention and the fast paths that are on."""
    from arena_assets.ranker.fp8 import Fp8Linear

    model = head.model.get_base_model() if hasattr(head.model, "get_base_model") else head.model
    embedding = model.get_input_embeddings().weight
    if config.pack_sequences:
        if config.sdpa_row_multiple:
            attention = f"SDPA on whole rows, widths a multiple of {config.sdpa_row_multiple}"
        else:
            attention = "the varlen flash kernel" if embedding.is_cuda else "SDPA a row at a time"
        shared = "a row and its swap sharing their prefix, " if config.both_orders else ""
        rows = f"packed ({shared}the system prompt once a pass), {config.token_budget} row tokens a pass"
    else:
        attention = model.config._attn_implementation
        rows = f"padded, up to {config.token_budget} tokens and {config.max_batch_rows} rows a batch"
    fp8 = any(isinstance(module, Fp8Linear) for module in model.modules())
    return (
        f"scoring {'both orders' if config.both_orders else 'one order'}: compute "
        f"{str(embedding.dtype).removeprefix('torch.')}, rows {rows}, attention {attention}, "
        f"liger {'on' if getattr(model, 'arena_liger', False) else 'off'}, last layer "
        f"{'at the read rows only' if watches_head_rows(model.model) else 'at all positions'}, "
        f"linear layers {'in e4m3' if fp8 else 'in the compute dtype'}, residual added "
        f"{'in the output matmuls' if adds_residual_in_matmuls(model.model) else 'after them'}"
    )


# Settings that change where things go or what is recorded, never the logits.
NOT_IN_FINGERPRINT = (
    "output_dir", "input_path", "profile_dir", "profile_passes", "fp8_check_rows", "fp8_min_same_winner"
)


def fingerprint(config: ScoreConfig) -> dict[str, Any]:
    """What decides the logits besides the rows: shards are reused only under the same fingerprint."""
    inputs = {"model": model_identity(config.model)}
    if config.adapter_dir:
        inputs["adapter"] = model_identity(config.adapter_dir)
    # The rows are each shard's own business (its name hashes them), so the input file is no part of this.
    settings = {k: v for k, v in config_to_dict(config).items() if k not in NOT_IN_FINGERPRINT}
    return {"config": settings, "inputs": inputs, "code": ranker_code_version()}


def score(config: ScoreConfig) -> dict[str, Any]:
    """Score every row of `input_path` (both orders unless disabled) into `output_dir`."""
    # Precision is the ranker's own (weights loaded in the compute dtype), not accelerate's autocast.
    accelerator = Accelerator(mixed_precision="no")
    output_dir = Path(config.output_dir)
    shard_dir = output_dir.with_name(output_dir.name + ".work")
    with pipes_reporter(is_main_process=accelerator.is_main_process) as reporter:
        start = time.perf_counter()
        if config.device_map == "auto" and accelerator.num_processes > 1:
            raise ValueError(
                f"device_map 'auto' spreads one model over every GPU from one process, but "
                f"{accelerator.num_processes} processes were launched: run the scorer with one process "
                "(num_processes 1), or use device_map 'single' with one process per GPU"
            )
        frame = read_pairs(
            config.input_path, required=(config.id_column, "prompt", "response_a", "response_b")
        )
        frame["id"] = frame[config.id_column].astype(str)
        if frame["id"].duplicated().any():
            raise ValueError(
                f"{config.input_path}: column {config.id_column!r} has duplicates; each row needs a "
                "unique id (set id_column)"
            )
        made_by = fingerprint(config)
        checkpointing.claim(
            shard_dir,
            made_by,
            is_main_process=accelerator.is_main_process,
            barrier=accelerator.wait_for_everyone,
            log=reporter.warning,
        )
        head, tokenizer, device = load_scoring_head(config, accelerator.device, quantize=False)
        template = PromptTemplate.from_tokenizer(tokenizer)
        fp8_check = (
            quantize_with_check(head, frame, template, config, tokenizer.pad_token_id, device)
            if config.fp8_matmuls else {}
        )  # fmt: skip
        if fp8_check:
            reporter.info(f"fp8 matmuls: {fp8_check}")
        reporter.info(scoring_path_report(head, config))

        shard_count = -(-len(frame) // config.rows_per_shard)
        mine = [k for k in range(shard_count) if k % accelerator.num_processes == accelerator.process_index]
        rows_scored = tokens = padded = shared = 0
        scoring_seconds = 0.0  # the forward passes alone, not loading or merging
        profile_dir = config.profile_dir if accelerator.is_main_process else ""
        with StepProfiler(profile_dir, steps=config.profile_passes, lora_r=0) as profiler:
            for k in mine:
                part = frame.iloc[k * config.rows_per_shard : (k + 1) * config.rows_per_shard]
                path = shard_path(shard_dir, k, part)
                if path.is_file():
                    continue
                for other in shard_dir.glob(f"shard-{k:05d}-*.parquet"):  # these rows' older version
                    other.unlink()
                result = pd.DataFrame({"id": part["id"].astype(str).to_numpy()})
                orders = encode_orders(template, part, config)
                scoring_start = time.perf_counter()
                logits, pass_padded, pass_shared = _score_orders(
                    head, orders, config, tokenizer.pad_token_id, device, profiler.step
                )
                scoring_seconds += time.perf_counter() - scoring_start
                for values, suffix in zip(logits, ("", "_swapped"), strict=False):
                    result[f"a_logit{suffix}"], result[f"b_logit{suffix}"] = values[:, 0], values[:, 1]
                tokens += sum(int(encoded.lengths.sum()) for encoded in orders)
                padded += pass_padded
                shared += pass_shared
                atomic_write_parquet(result, path)
                rows_scored += len(part)
                reporter.info(f"shard {k + 1}/{shard_count}: {len(part)} rows")
        mine_totals = torch.tensor(
            [rows_scored, tokens, scoring_seconds, padded, shared], dtype=torch.float64
        )
        totals = accelerator.gather(mine_totals.to(accelerator.device).view(1, 5)).view(-1, 5).cpu()
        accelerator.wait_for_everyone()
        metrics: dict[str, Any] = {}
        if accelerator.is_main_process:
            rows_scored, tokens, padded, shared = (int(totals[:, i].sum()) for i in (0, 1, 3, 4))
            # The slowest rank's forward time: the ranks run side by side and the run ends with it.
            scoring_seconds = float(totals[:, 2].max())
            merged = _merge_shards(shard_dir, shard_count, frame, config.rows_per_shard)
            values = merged[[c for c in LOGIT_COLUMNS if c in merged]].to_numpy()
            metrics = {
                "rows": len(merged),
                "rows_scored_this_run": rows_scored,
                "shards": shard_count,
                # All ranks' row tokens (both orders, unpadded) over the slowest rank's forward time.
                "scoring_tokens_per_second": tokens / scoring_seconds if scoring_seconds else 0.0,
                # Pad positions over all positions the forward passes processed.
                "padding_fraction": padded / (padded + tokens - shared) if tokens else 0.0,
                # Row tokens a packed pass did not compute: a swap's prefix shared with its row.
                "shared_prefix_fraction": shared / tokens if tokens else 0.0,
                "wall_seconds": time.perf_counter() - start,
                "peak_memory_gb": peak_memory_gb(),
                "finite": bool(np.isfinite(values).all()),
                **{f"fp8_{k}": v for k, v in fp8_check.items()},
                **summary_metrics(profiler.summary, "pass"),
            }
            with atomic_directory(output_dir) as tmp:
                merged.to_parquet(tmp / LOGITS_NAME, index=False)
                (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
                write_manifest(
                    tmp,
                    config=config_to_dict(config),
                    inputs=made_by["inputs"],
                    extra={"kind": "letter_logits", "ranker_code": made_by["code"]},
                )
            reporter.report_materialization({**metrics, "logits_path": path_value(output_dir / LOGITS_NAME)})
        accelerator.wait_for_everyone()
        return metrics


def encode_orders(template: PromptTemplate, part: pd.DataFrame, config: ScoreConfig) -> list[Any]:
    """These rows encoded as shown, and swapped (response B shown as A) unless `both_orders` is off."""
    return [
        encode_frame(template, part, max_length=config.max_length, rebalance=config.rebalance_truncation,
                     swapped=swapped)  # fmt: skip
        for swapped in ((False, True) if config.both_orders else (False,))
    ]


def quantize_with_check(
    head: LetterHead, frame: pd.DataFrame, template: PromptTemplate, config: ScoreConfig, pad_token_id: int,
    device: torch.device,
) -> dict[str, float]:
    """Quantize the head's linear layers to fp8 (ranker/fp8.py), having scored the first `fp8_check_rows`
    rows before and after: how often the winner stays and how the A-B margins correlate, both orders.

    Raises when the winner stays for fewer than `fp8_min_same_winner` of them: then fp8's rounding moves this
    model's logits too far to trust its scores."""
    rows = frame.head(config.fp8_check_rows)
    if rows.empty:
        _quantize(head, config)
        return {}
    orders = encode_orders(template, rows, config)
    before, _, _ = _score_orders(head, orders, config, pad_token_id, device, None)
    _quantize(head, config)
    after, _, _ = _score_orders(head, orders, config, pad_token_id, device, None)
    check = {"check_rows": len(rows), **margin_agreement(np.concatenate(before), np.concatenate(after))}
    if check["same_winner"] < config.fp8_min_same_winner:
        raise ValueError(
            f"fp8_matmuls: on the first {len(rows)} rows of {config.input_path} the fp8 model picks the "
            f"full-precision winner for {check['same_winner']:.1%} of them (fp8_min_same_winner "
            f"{config.fp8_min_same_winner:.0%}; margin correlation {check['margin_correlation']:.3f}): score "
            "this model without fp8_matmuls"
        )
    return check


def _quantize(head: LetterHead, config: ScoreConfig) -> None:
    """The head's linear layers in fp8, the last layer's read rows watched on the new ones."""
    quantize_linears(decoder_layers(head.model))
    if config.head_rows_only:
        head.watch_head_rows()


def _score_orders(
    head: LetterHead, orders: list[Any], config: ScoreConfig, pad_token_id: int, device: torch.device,
    after_pass: Callable[[], None] | None,
) -> tuple[list[np.ndarray], int, int]:
    """Letter logits of each order's encoded rows, the pad positions added and the row tokens shared.

    Packed, a row and its swap share one forward pass and their prefix; padded, each order is batched
    by length on its own."""
    if config.pack_sequences:
        rows = [ids for pair in zip(*(encoded.input_ids for encoded in orders), strict=True) for ids in pair]
        logits, shared = score_packed(
            head, rows, pairs=len(orders) == 2, token_budget=config.token_budget, device=device,
            after_pass=after_pass, row_multiple=config.sdpa_row_multiple,
        )
        return [logits[i :: len(orders)] for i in range(len(orders))], 0, shared
    logits, padded = [], 0
    for encoded in orders:
        logits.append(
            score_sequences(
                head,
                encoded.input_ids,
                pad_token_id=pad_token_id,
                token_budget=config.token_budget,
                max_batch_rows=config.max_batch_rows,
                device=device,
                after_pass=after_pass,
            )
        )
        padded += padded_tokens(
            encoded.lengths, token_budget=config.token_budget, max_batch_rows=config.max_batch_rows
        )
    return logits, padded, 0


def shard_path(shard_dir: Path, index: int, part: pd.DataFrame) -> Path:
    """Shard `index` of these rows: its name carries a hash of their ids and text."""
    content = pd.util.hash_pandas_object(part[["id", *PAIR_COLUMNS]], index=False).to_numpy()
    return shard_dir / f"shard-{index:05d}-{hashlib.sha256(content.tobytes()).hexdigest()[:16]}.parquet"


def _merge_shards(
    shard_dir: Path, shard_count: int, frame: pd.DataFrame, rows_per_shard: int
) -> pd.DataFrame:
    parts = [
        pd.read_parquet(shard_path(shard_dir, k, frame.iloc[k * rows_per_shard : (k + 1) * rows_per_shard]))
        for k in range(shard_count)
    ]
    merged = pd.concat(parts, ignore_index=True)
    expected = frame["id"].astype(str).to_numpy()
    if len(merged) != len(expected) or not (merged["id"].to_numpy() == expected).all():
        raise RuntimeError(
            f"{shard_dir}: shards do not cover the input rows exactly once; delete the directory "
            "and score again"
        )
    return merged


def main(argv: list[str] | None = None) -> None:
    score(parse_config(ScoreConfig, argv, description=__doc__))


if __name__ == "__main__":
    main()
