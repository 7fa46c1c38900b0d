"""Merge a LoRA adapter into its backbone and prove on a probe batch that nothing changed.

    python -m arena_assets.ranker.merger --config merge.json

Writes a safetensors model directory that `AutoModelForCausalLM.from_pretrained` loads (with the
tokenizer), atomically, with `parity.json` and `manifest.json`, and reports the parity check: under Dagster
a merged model whose letter logits differ from the adapter model's by more than the tolerance fails the
blocking check `merged_model_matches_adapter`; from a shell the command exits non-zero. A NaN adapter or a
disk that cannot hold the result fails before anything is written.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate import Accelerator
from peft import PeftModel

from arena_assets.ranker.artifacts import (
    PARITY_NAME,
    atomic_directory,
    directory_size_bytes,
    file_sha256,
    write_manifest,
)
from arena_assets.ranker.card import carried_facts, write_card
from arena_assets.ranker.cli_args import parse_config
from arena_assets.ranker.config import MergeConfig, config_to_dict
from arena_assets.ranker.data import encode_frame, read_pairs
from arena_assets.ranker.head import LetterHead, score_sequences
from arena_assets.ranker.modeling import load_backbone, peak_memory_gb, resolve_dtype
from arena_assets.ranker.pipes import PARITY_CHECK, launched_by_pipes, path_value, pipes_reporter
from arena_assets.ranker.prompt import PromptTemplate, letter_token_ids, load_tokenizer

# Built-in probe when no probe file is given: several scripts, so tokenization paths are all exercised.
PROBE_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("What is the capital of France?", "Paris is the capital of France.", "I am not sure, sorry."),
    ("Объясни, что такое фотосинтез.", "Конечно: растения превращают свет в энергию.", "Извините, не знаю."),
    ("用一句话介绍长城。", "当然，长城是中国古代的防御工程。", "抱歉，我无法回答。"),
    ("¿Cómo se dice 'gracias' en alemán?", "Se dice 'danke'.", "No estoy seguro."),
)
DEFAULT_ATOL = {torch.float32: 1e-4, torch.bfloat16: 0.15, torch.float16: 0.05}


def probe_frame(config: MergeConfig) -> pd.DataFrame:
    """Rows for the parity probe: the first `probe_rows` of `probe_path`, or the built-in pairs."""
    if config.probe_path:
        return read_pairs(config.probe_path).head(config.probe_rows)
    return pd.DataFrame(PROBE_PAIRS, columns=["prompt", "response_a", "response_b"])


def check_free_disk(output_dir: Path, needed_bytes: int) -> dict[str, float]:
    """Fail before writing when the target filesystem cannot hold the merged model (10% headroom);
    returns the preflight's figures (GiB) for the report."""
    target = output_dir.parent
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free
    if free < needed_bytes * 1.1:
        raise OSError(
            f"{target}: {free / 2**30:.1f} GiB free, the merged model needs about "
            f"{needed_bytes * 1.1 / 2**30:.1f} GiB. Free space or set output_dir elsewhere."
        )
    return {"disk_free_gb": free / 2**30, "disk_needed_gb": needed_bytes * 1.1 / 2**30}


def merge(config: MergeConfig) -> dict[str, Any]:
    """Merge, check parity, save; returns the parity report (empty on ranks other than 0)."""
    # Merging is one process's work: under a multi-process launch the other ranks leave at once, so two
    # ranks never write the same directory or both report to Dagster.
    if not Accelerator(mixed_precision="no").is_main_process:
        return {}
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(config.precision, device)
    spread = config.device_map == "auto" and device.type == "cuda"
    with pipes_reporter(is_main_process=True) as reporter:
        tokenizer = load_tokenizer(config.adapter_dir)
        template = PromptTemplate.from_tokenizer(tokenizer)
        letters = letter_token_ids(tokenizer)
        backbone = load_backbone(
            config.backbone,
            dtype=dtype,
            device=device,
            use_liger="off",
            device_map="auto" if spread else None,
        )
        # Probe inputs go where the embeddings are: the first GPU of a device map.
        device = backbone.get_input_embeddings().weight.device
        model = PeftModel.from_pretrained(backbone, config.adapter_dir).eval()
        encoded = encode_frame(template, probe_frame(config), max_length=config.max_length, rebalance=True)

        def probe(module: torch.nn.Module) -> torch.Tensor:
            return torch.from_numpy(
                score_sequences(
                    LetterHead(module, letters).eval(),
                    encoded.input_ids,
                    pad_token_id=tokenizer.pad_token_id,
                    token_budget=len(encoded.input_ids) * config.max_length,
                    max_batch_rows=len(encoded.input_ids),
                    device=device,
                )
            )

        adapter_logits = probe(model)
        if not torch.isfinite(adapter_logits).all():
            raise RuntimeError(
                f"the adapter model gives non-finite letter logits on the probe batch; "
                f"{config.adapter_dir} is broken (diverged training?). Not merging it."
            )
        merged = model.merge_and_unload()
        merged_logits = probe(merged)
        diff = float((adapter_logits - merged_logits).abs().max())
        atol = config.parity_atol or DEFAULT_ATOL[dtype]
        report = {
            "max_abs_logit_diff": diff,
            "atol": atol,
            "probe_rows": len(encoded.input_ids),
            "dtype": str(dtype).removeprefix("torch."),
            "parity_passed": bool(diff <= atol),  # a NaN difference fails too
        }
        reporter.info(f"merge parity: max |adapter - merged| = {diff:.3g} (tolerance {atol:g})")
        output_dir = Path(config.output_dir)
        merged_bytes = sum(p.numel() * p.element_size() for p in merged.parameters())
        report.update(check_free_disk(output_dir, merged_bytes))
        with atomic_directory(output_dir) as tmp:
            merged.save_pretrained(tmp, safe_serialization=True, max_shard_size=config.max_shard_size)
            tokenizer.save_pretrained(tmp)
            (tmp / PARITY_NAME).write_text(json.dumps(report, indent=2))
            trained_length, metrics, data = carried_facts(Path(config.adapter_dir))
            write_card(tmp, kind="merged model", backbone=config.backbone,
                       max_length=trained_length or config.max_length, metrics=metrics, data=data)
            write_manifest(
                tmp,
                config=config_to_dict(config),
                inputs={"adapter": file_sha256(Path(config.adapter_dir) / "adapter_model.safetensors")},
                extra={"kind": "merged_model"},
            )
        report["model_size_gb"] = directory_size_bytes(output_dir) / 2**30
        report["wall_seconds"] = time.perf_counter() - start
        report["peak_memory_gb"] = peak_memory_gb()
        # ru_maxrss is in KiB on Linux: the merge's peak host memory, loading and saving included.
        report["peak_host_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        reporter.report_materialization({**report, "model_dir": path_value(output_dir)})
        # A failed parity is the blocking check's verdict in Dagster (nothing downstream runs); a shell
        # run fails in main().
        reporter.report_check(
            PARITY_CHECK,
            passed=report["parity_passed"],
            metadata={
                "observed_max_abs_diff": diff,
                "expected_at_most": atol,
                "probe_rows": len(encoded.input_ids),
            },
        )
        return report


def main(argv: list[str] | None = None) -> None:
    report = merge(parse_config(MergeConfig, argv, description=__doc__))
    if report and not report["parity_passed"] and not launched_by_pipes():
        raise SystemExit(
            f"merged model differs from the adapter model by {report['max_abs_logit_diff']:.3g} > "
            f"{report['atol']:g} on the probe batch; the merge is wrong (saved for inspection)"
        )


if __name__ == "__main__":
    main()
