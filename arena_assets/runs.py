"""Runs whose orchestrating process died (a closed terminal, SIGKILL) are found by the next run, marked
failed, their pool slots freed and their orphaned GPU children ended, before any of its steps waits.

Without this, a killed `dagster asset materialize` stays STARTED forever and keeps its slot of the `gpu`
pool, so every later GPU step in that Dagster home waits on "Step blocked by limit for pool gpu". Every run
records who runs it (host, pid and process start time, so a reused pid is never mistaken for it) and which
processes each GPU step started; the project's executor checks the other unfinished runs before it starts
executing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
from dagster._core.executor.base import Executor

from arena_assets.process_group import end_session, process_start_time

WORKER_TAG = "arena/worker"  # host:pid:start of the process orchestrating the run
STEP_TAG = "arena/step/"  # + step key: host:pid:start of the process running that GPU step
CHILD_TAG = "arena/child/"  # + step key: host:pid:start of the session leader that step launched
UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def process_token(pid: int) -> str:
    """`host:pid:start`, naming one process for as long as it lives."""
    return f"{socket.gethostname()}:{pid}:{process_start_time(pid)}"


def _parse(token: str) -> tuple[str, int, int | None]:
    host, pid, start = token.rsplit(":", 2)
    return host, int(pid), None if start == "None" else int(start)


def is_dead(token: str) -> bool:
    """Whether the process a token names has ended; a process on another host is never judged dead."""
    host, pid, start = _parse(token)
    return host == socket.gethostname() and (start is None or process_start_time(pid) != start)


def release_dead_runs(instance: dg.DagsterInstance, *, log: Callable[[str], None],
                      grace_seconds: float = 10.0) -> list[str]:
    """Fail every unfinished run of this host whose orchestrator is gone; returns their run ids.

    Its orphaned step processes and their GPU children are ended first (SIGTERM, grace, SIGKILL), so no
    orphan finishes later and writes over a newer artifact; then the run is marked failed and its
    concurrency slots are freed.
    """
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        worker = run.tags.get(WORKER_TAG)
        if worker is None or not is_dead(worker):
            continue
        for key, token in run.tags.items():
            if key.startswith((STEP_TAG, CHILD_TAG)) and not is_dead(token):
                _, pid, start = _parse(token)
                end_session(pid, start, grace_seconds=grace_seconds)
        message = f"its process ({worker}) died without ending the run; released by a later run"
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log(f"run {run.run_id} ({run.job_name}): {message}")
        released.append(run.run_id)
    return released


class ReleasingExecutor(Executor):
    """Dagster's executor, preceded by `release_dead_runs` and the tagging of this run's own worker."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[dg.DagsterEvent]:
        instance, run_id = plan_context.instance, plan_context.run_id
        instance.add_run_tags(run_id, {WORKER_TAG: process_token(os.getpid())})
        release_dead_runs(instance, log=plan_context.log.warning)
        yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="multi_or_in_process_executor",
    config_schema=dg.multi_or_in_process_executor.config_schema,
    requirements=dg.multi_or_in_process_executor.get_requirements,
)
def releasing_executor(init_context: dg.InitExecutorContext) -> Executor:
    """Dagster's default executor (in-process or multiprocess, configured the same way), which first
    releases the runs whose process died."""
    return ReleasingExecutor(dg.multi_or_in_process_executor.executor_creation_fn(init_context))
