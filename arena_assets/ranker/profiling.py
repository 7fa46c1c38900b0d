"""Where a training step's time goes: torch.profiler over a few steps, summed by kind of work.

`TrainConfig.profile_dir` turns it on. After two steps (the first pays the allocator's growth and the
kernels' selection) it records `profile_steps` optimizer steps and writes to that directory:
`trace.json.gz` (open it in Perfetto or TensorBoard), `ops.json` (every operator with its input shapes and
self time, and every GPU kernel with its time) and `summary.json` (the time per step by kind of work:
frozen matmuls, LoRA matmuls, attention, optimizer, copies, the rest). The summary is what the trainer's
metrics carry as `profile_*`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerAction, ProfilerActivity, profile, schedule

from arena_assets.ranker.artifacts import atomic_write_text

MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm"})
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


def summarize(ops: list[dict[str, Any]], kernels: list[dict[str, Any]], steps: int, lora_r: int) -> dict:
    """Milliseconds per step and share of the step's device time (CPU time without a GPU) by category."""
    per_category: dict[str, float] = defaultdict(float)
    for op in ops:
        per_category[op_category(op["name"], op["shapes"], lora_r)] += op["self_us"]
    if kernels:  # on a GPU the kernels are the whole of the device's time
        per_category[UNATTRIBUTED] = max(0.0, sum(k["us"] for k in kernels) - sum(per_category.values()))
    total = sum(per_category.values()) or 1.0
    return {
        "steps": steps,
        "device": "cuda" if kernels else "cpu",
        "ms_per_step": {k: round(v / steps / 1e3, 3) for k, v in sorted(per_category.items())},
        "share": {k: round(v / total, 4) for k, v in sorted(per_category.items())},
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
        ops, kernels = [], []
        for event in prof.key_averages(group_by_input_shape=True):
            if "CUDA" in str(event.device_type):
                kernels.append({"name": event.key, "us": event.self_device_time_total, "count": event.count})
                continue
            self_us = event.self_device_time_total if torch.cuda.is_available() else event.self_cpu_time_total
            if self_us > 0:
                shapes = [list(s) for s in event.input_shapes if isinstance(s, list | tuple)]
                ops.append({"name": event.key, "shapes": shapes, "self_us": self_us, "count": event.count})
        steps = max(self._recorded, 1)
        self.summary = summarize(ops, kernels, steps, self.lora_r)
        atomic_write_text(self.directory / "ops.json", json.dumps({"ops": ops, "kernels": kernels}))
        atomic_write_text(self.directory / "summary.json", json.dumps(self.summary, indent=2))
        trace = self.directory / "trace.json.gz"
        prof.export_chrome_trace(str(trace.with_name("trace.tmp.json.gz")))
        trace.with_name("trace.tmp.json.gz").replace(trace)
