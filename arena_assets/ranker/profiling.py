"""Where a training step's time goes: torch.profiler over a few steps, summed by kind of work.

`TrainConfig.profile_dir` turns it on. After two steps (the first pays the allocator's growth and the
kernels' selection) it records `profile_steps` optimizer steps and writes to that directory:
`trace.json.gz` (open it in Perfetto or TensorBoard), `ops.json` (every operator with its input shapes and
self time, and every GPU kernel with its time) and `summary.json` (the time per step by kind of work:
frozen matmuls, LoRA matmuls, attention, optimizer, copies, the rest; on a GPU also the share of the steps'
span in which it had nothing to run). The summary is what the trainer's metrics carry as `profile_*`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerAction, ProfilerActivity, profile, schedule

from arena_assets.ranker.artifacts import atomic_write_text

# addmm_: a matmul accumulated into its output (the scorer's residual, LoRA's update in training).
MATMUL_OPS = frozenset(
    {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm"}
)
ATTENTION_MARKERS = ("attention", "flash", "cudnn", "efficient", "varlen", "fmha")
OPTIMIZER_MARKERS = ("adam", "optimizer")
COPY_OPS = frozenset({"aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone"})
# Kernels that no operator launched (Triton's, liger's among them) are not in any operator's self time.
UNATTRIBUTED = "kernels_outside_operators"
RECORDING = (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE)


def op_category(name: str, shapes: list[list[int]], lora_r: int) -> str:
    """The kind of work an operator is: LoRA matmuls are the ones with the adapter rank in a shape."""
    lowered = name.lower()
    if name in MATMUL_OPS:
        return "lora_matmul" if lora_r and any(lora_r in shape for shape in shapes) else "matmul"
    if any(marker in lowered for marker in ATTENTION_MARKERS):
        return "attention"
    if any(marker in lowered for marker in OPTIMIZER_MARKERS):
        return "optimizer"
    if name in COPY_OPS:
        return "copy"
    return "other"


def busy_and_span(ranges: list[tuple[float, float]]) -> tuple[float, float]:
    """(time covered by at least one of the ranges, time from the first start to the last end)."""
    busy, end, first = 0.0, float("-inf"), None
    for start, stop in sorted(ranges):
        first = start if first is None else first
        if start > end:
            busy += stop - start
        elif stop > end:
            busy += stop - end
        end = max(end, stop)
    return busy, (end - first) if first is not None else 0.0


def summarize(
    ops: list[dict[str, Any]], kernels: list[dict[str, Any]], steps: int, lora_r: int, span_us: float = 0.0,
    busy_us: float = 0.0,
) -> dict:
    """Milliseconds per step and share of the step's device time (CPU time without a GPU) by category;
    on a GPU also how much of the recorded steps' span the GPU had nothing to run (waiting for the CPU)."""
    per_category: dict[str, float] = defaultdict(float)
    for op in ops:
        per_category[op_category(op["name"], op["shapes"], lora_r)] += op["self_us"]
    if kernels:  # on a GPU the kernels are the whole of the device's time
        per_category[UNATTRIBUTED] = max(0.0, sum(k["us"] for k in kernels) - sum(per_category.values()))
    total = sum(per_category.values()) or 1.0
    summary = {
        "steps": steps,
        "device": "cuda" if kernels else "cpu",
        "ms_per_step": {k: round(v / steps / 1e3, 3) for k, v in sorted(per_category.items())},
        "share": {k: round(v / total, 4) for k, v in sorted(per_category.items())},
    }
    if span_us > 0:
        summary["step_span_ms"] = round(span_us / steps / 1e3, 3)
        summary["device_idle_share"] = round(1 - busy_us / span_us, 4)
    return summary


def summary_metrics(summary: dict[str, Any], unit: str) -> dict[str, float]:
    """A summary's figures as run metrics: `profile_<kind>_ms_per_<unit>`, and on a GPU the step span and
    the device's idle share; nothing for an empty summary (no profile)."""
    return {
        **{f"profile_{k}_ms_per_{unit}": v for k, v in summary.get("ms_per_step", {}).items()},
        **{f"profile_{k}": summary[k] for k in ("step_span_ms", "device_idle_share") if k in summary},
    }


class StepProfiler:
    """Records `steps` steps after `skip` with torch.profiler; `step()` after each optimizer step.

    A no-op when `directory` is empty. The summary is written when the recording ends, or at exit when the
    run stopped inside it (fewer steps recorded, said in `summary.json`)."""

    def __init__(self, directory: str, *, steps: int, lora_r: int, skip: int = 2) -> None:
        self.directory = Path(directory) if directory else None
        self.steps, self.lora_r, self.skip = steps, lora_r, skip
        self.summary: dict[str, Any] = {}
        self._recorded = 0
        self._profile: profile | None = None

    def __enter__(self) -> StepProfiler:
        if self.directory is None:
            return self
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self._profile = profile(
            activities=activities,
            schedule=schedule(skip_first=self.skip - 1, wait=0, warmup=1, active=self.steps, repeat=1),
            record_shapes=True,
            on_trace_ready=self._write,
        )
        self._profile.__enter__()
        return self

    def step(self) -> None:
        if self._profile is not None:
            self._recorded += self._profile.current_action in RECORDING
            self._profile.step()

    def __exit__(self, *exc: object) -> None:
        if self._profile is not None:
            self._profile.__exit__(*exc)
            self._profile = None

    def _write(self, prof: profile) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        ops = []
        for event in prof.key_averages(group_by_input_shape=True):
            if "CUDA" in str(event.device_type):
                continue  # the kernels, from the events below
            self_us = event.self_device_time_total if torch.cuda.is_available() else event.self_cpu_time_total
            if self_us > 0:
                shapes = [list(s) for s in event.input_shapes if isinstance(s, list | tuple)]
                ops.append({"name": event.key, "shapes": shapes, "self_us": self_us, "count": event.count})
        # Kernels and copies; the profiler also puts annotations (ProfilerStep#) on the device's timeline.
        device_events = [e for e in prof.events()
                         if "CUDA" in str(e.device_type) and not getattr(e, "is_user_annotation", False)
                         and not e.name.startswith("ProfilerStep")]  # fmt: skip
        by_name: dict[str, dict[str, Any]] = {}
        for event in device_events:
            kernel = by_name.setdefault(event.name, {"name": event.name, "us": 0.0, "count": 0})
            kernel["us"] += event.time_range.elapsed_us()
            kernel["count"] += 1
        kernels = list(by_name.values())
        busy, span = busy_and_span([(e.time_range.start, e.time_range.end) for e in device_events])
        steps = max(self._recorded, 1)
        self.summary = summarize(ops, kernels, steps, self.lora_r, span_us=span, busy_us=busy)
        atomic_write_text(self.directory / "ops.json", json.dumps({"ops": ops, "kernels": kernels}))
        atomic_write_text(self.directory / "summary.json", json.dumps(self.summary, indent=2))
        trace = self.directory / "trace.json.gz"
        prof.export_chrome_trace(str(trace.with_name("trace.tmp.json.gz")))
        trace.with_name("trace.tmp.json.gz").replace(trace)
