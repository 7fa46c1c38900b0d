"""Resources: run-wide settings, and the launcher that runs ranker entry points as Pipes children."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import dagster as dg
from pydantic import Field

from arena_assets.pipes_messages import WholeLineMessageReader
from arena_assets.process_group import SessionProcess
from arena_assets.runs import CHILD_TAG, STEP_TAG, process_token
from arena_assets.settings import Settings, load_settings

# Exceptions the launchers raise about a failed rank; the rank's own exception is more useful in a headline.
_WRAPPER_ERRORS = ("CalledProcessError", "ChildFailedError")
# `ValueError: ...`, also as torchrun prefixes it (`[rank0]: ValueError: ...`).
_EXCEPTION_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?"
                             r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\w*)(?::|$)")


class ArenaSettingsResource(dg.ConfigurableResource):
    """Run-wide settings; unset fields come from the environment, `.env` and the profile's defaults."""

    # str, not the Literal: Dagster config has no Literal type; Settings rejects unknown profiles.
    profile: str | None = Field(None, description="demo or qwen14b; unset: ARENA_PROFILE or demo.")
    backbone: str | None = Field(None, description="Hugging Face model directory of the backbone.")
    raw_dir: str | None = Field(None, description="Root of the raw files.")
    artifact_root: str | None = Field(None, description="Each asset writes under <artifact_root>/<asset>/.")
    max_length: int | None = Field(None, description="Token budget of one judge prompt, for every step.")

    def settings(self) -> Settings:
        """The Settings with this resource's non-empty fields as overrides."""
        overrides = {name: value for name, value in self.model_dump().items() if value is not None}
        return load_settings(**overrides)


class AccelerateLauncher(dg.ConfigurableResource):
    """Runs `python -m <module> --config F` under `accelerate launch` through Dagster Pipes.

    The child runs in its own session; when the step is interrupted or fails, its whole process tree gets
    SIGTERM, then SIGKILL after `termination_grace_seconds` (see arena_assets/process_group.py).
    """

    num_processes: int | None = Field(
        None, ge=1, description="Processes (GPUs) per machine; unset: ARENA_NUM_PROCESSES, else 1.")
    num_machines: int = Field(
        1, ge=1, description="Machines in one run; each runs the same command with its machine_rank.")
    machine_rank: int = Field(0, ge=0, description="This machine's rank; machine 0 holds the rendezvous.")
    main_process_ip: str | None = Field(
        None, description="Address of machine 0, where every machine meets (num_machines > 1).")
    accelerate_config_file: str | None = Field(
        None, description="accelerate yaml (DDP/FSDP/DeepSpeed); replaces the process flags.")
    visible_devices: str | None = Field(None, description="CUDA_VISIBLE_DEVICES for the child, e.g. '0,1'.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for every rank.")
    use_accelerate: bool = Field(True, description="False: plain `python -m module` (debugging).")
    cpu: bool | None = Field(None, description="Run on CPU; unset: when torch sees no CUDA device.")
    termination_grace_seconds: float = Field(20.0, ge=0, description="SIGTERM to SIGKILL on interruption.")
    main_process_port: int | None = Field(None, description="torchrun port; 0 picks a free one.")

    def command(self, *, module: str, config_path: Path) -> list[str]:
        """The argv that runs `module` with `--config config_path`.

        Args:
            module: Entry point module, e.g. `arena_assets.ranker.trainer`.
            config_path: The entry point's config file.
        """
        entry = ["-m", module, "--config", str(config_path)]
        per_machine = self.processes()
        processes = per_machine * self.num_machines  # accelerate counts the processes of all machines
        if not self.use_accelerate:
            return [sys.executable, *entry]
        # The launcher as a module of this interpreter, so the venv's accelerate and torch run the ranks.
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
        if self.accelerate_config_file:
            cmd += ["--config_file", self.accelerate_config_file]
        else:
            # Every value accelerate would otherwise default with a warning (no prompts: stdin is closed).
            # Precision is the ranker's own `precision` field (its entry points pin
            # Accelerator(mixed_precision="no")), so the launcher has no precision setting to offer.
            cmd += ["--num_processes", str(processes), "--num_machines", str(self.num_machines),
                    "--mixed_precision", "no", "--dynamo_backend", "no",
                    # Without it accelerate exports OMP_NUM_THREADS=1: one core per rank on CPU.
                    "--num_cpu_threads_per_process", str(max(1, _cpu_count() // per_machine))]
            if self.num_machines > 1:
                # Static rendezvous at machine 0: each machine's ranks are machine_rank * N + local rank, so
                # global rank 0 (the one that writes and reports) lives on machine 0.
                cmd += ["--machine_rank", str(self.machine_rank), "--main_process_ip", self._rendezvous_ip(),
                        "--rdzv_backend", "static"]
            if processes > 1:
                # torchrun; on CPU it needs ACCELERATE_USE_CPU too (launch_env), as accelerate 1.15 only
                # starts CPU ranks itself through mpirun.
                cmd.append("--multi_gpu")
        if self.main_process_port is not None:
            cmd += ["--main_process_port", str(self.main_process_port)]
        return [*cmd, *entry]

    def _rendezvous_ip(self) -> str:
        if not self.main_process_ip or not self.main_process_port:
            raise ValueError(
                f"launcher: num_machines={self.num_machines} needs main_process_ip and a fixed "
                "main_process_port (machine 0's address and port, the same on every machine); set both "
                "in the launcher resource"
            )
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"launcher: machine_rank {self.machine_rank} is not below num_machines "
                             f"{self.num_machines}")
        return self.main_process_ip

    def processes(self) -> int:
        """The process count: this resource's field, else the settings' (ARENA_NUM_PROCESSES), read now."""
        return self.num_processes if self.num_processes is not None else load_settings().num_processes

    def launch_env(self) -> dict[str, str]:
        """Environment set for the child on top of ours (every rank inherits it)."""
        env = dict(self.env)
        if self.visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.visible_devices
        if self.on_cpu():
            env["ACCELERATE_USE_CPU"] = "true"
        return env

    def on_cpu(self) -> bool:
        """Whether the ranks run on CPU."""
        if self.cpu is not None:
            return self.cpu
        import torch  # lazily: only the launching process pays for it

        return not torch.cuda.is_available()

    def run(self, *, context: dg.AssetExecutionContext, module: str,
            config_path: Path) -> dg.PipesClientCompletedInvocation:
        """Run the entry point through Pipes; raises dg.Failure with the child's error on a nonzero exit.

        Args:
            context: The asset's execution context (receives the child's logs and results).
            module: Entry point module, e.g. `arena_assets.ranker.trainer`.
            config_path: The entry point's config file.
        """
        cmd = self.command(module=module, config_path=config_path)
        context.log.info(f"launching {shlex.join(cmd)}")
        with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                                   message_reader=WholeLineMessageReader()) as session:
            env = {**os.environ, **self.launch_env(), **session.get_bootstrap_env_vars()}
            with SessionProcess(cmd, env=env, grace_seconds=self.termination_grace_seconds) as child:
                # Should this run's process die, the next run ends this step and its child (runs.py).
                step = context.asset_key.to_user_string()
                context.instance.add_run_tags(context.run_id, {
                    STEP_TAG + step: process_token(os.getpid()), CHILD_TAG + step: process_token(child.pid)})
                try:
                    code = child.wait()
                except BaseException as exc:  # KeyboardInterrupt, DagsterExecutionInterruptedError, ...
                    context.log.warning(f"{type(exc).__name__}: ending the process tree of {module} "
                                        f"(SIGTERM, {self.termination_grace_seconds:g} s, SIGKILL)")
                    child.terminate()
                    context.log.warning(f"ended {len(child.terminated_pids)} processes of {module}; "
                                        f"SIGKILL needed for {sorted(child.killed_pids) or 'none'}")
                    raise
            if code == 0 and child.terminated_pids:
                context.log.warning(f"{module} left {sorted(child.terminated_pids)} running; ended them")
            if code != 0:
                tail = child.stderr_tail()
                raise dg.Failure(
                    description=_failure_description(module, code, tail),
                    metadata={"exit_code": code, "stderr_tail": dg.MetadataValue.md(f"```\n{tail}\n```")},
                )
        return dg.PipesClientCompletedInvocation(session)

    def materialize(self, *, context: dg.AssetExecutionContext, module: str,
                    config_path: Path) -> dg.MaterializeResult:
        """Run the entry point; its rank 0 must report the materialization, exit code 0 alone is not enough.

        Args:
            context: The asset's execution context.
            module: Entry point module, e.g. `arena_assets.ranker.trainer`.
            config_path: The entry point's config file.
        """
        invocation = self.run(context=context, module=module, config_path=config_path)
        # Implicit materialization would count a child that exited 0 without reporting (dagster #17868).
        results = invocation.get_results(implicit_materializations=False)
        if not any(isinstance(result, dg.MaterializeResult) for result in results):
            raise dg.Failure(description=f"{module} exited 0 without reporting a materialization "
                                         "(its rank 0 must call reporter.report_materialization)")
        return invocation.get_materialize_result(implicit_materialization=False)


def _cpu_count() -> int:
    # The CPUs this process may use (a container's cpuset), not the host's.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _failure_description(module: str, code: int, tail: str) -> str:
    """Headline with the rank's own exception line (not the launcher's wrapper error), then the tail."""
    headline = ""
    for line in reversed(tail.splitlines()):
        match = _EXCEPTION_LINE.match(line.strip())
        if match and not match.group(1).endswith(_WRAPPER_ERRORS):
            headline = line.strip()
            break
    headline = headline or "(no exception line in stderr)"
    return f"{module} exited with code {code}: {headline}\n\nstderr tail:\n{tail}"
