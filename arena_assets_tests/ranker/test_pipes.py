"""The child-side reporter: standalone printing, no Dagster import, and what reaches Dagster via Pipes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import dagster_pipes
import pytest

from arena_assets.ranker import pipes
from arena_assets.ranker.pipes import md, path_value, pipes_reporter, url_value
from arena_assets_tests.fixtures.pipes_child import CHECK_NAME, CHILD_ERROR
from arena_assets_tests.fixtures.pipes_job import CHILD_MODULE, REPO_ROOT


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_context_env_var_is_dagster_pipes_own() -> None:
    assert pipes.PIPES_CONTEXT_ENV_VAR == dagster_pipes.DAGSTER_PIPES_CONTEXT_ENV_VAR


def test_metadata_helpers_build_pipes_values() -> None:
    assert md("# a") == {"raw_value": "# a", "type": "md"}
    assert path_value(Path("/tmp/x")) == {"raw_value": "/tmp/x", "type": "path"}
    assert url_value("https://x.y") == {"raw_value": "https://x.y", "type": "url"}


def test_standalone_needs_neither_dagster_nor_dagster_pipes() -> None:
    done = _run_python("""
        import sys
        sys.modules["dagster_pipes"] = None  # as on a GPU box without it: importing it would fail
        from arena_assets.ranker.pipes import md, pipes_reporter
        with pipes_reporter(is_main_process=True) as reporter:
            assert reporter._pipes is None  # nothing to forward to
            reporter.report_materialization({"val_accuracy": 0.712345, "notes": md("# Title\\nbody")})
        assert not any(name == "dagster" or name.startswith("dagster.") for name in sys.modules)
    """)
    assert done.returncode == 0, done.stderr
    assert "materialization: val_accuracy=0.7123, notes=# Title" in done.stdout


def test_standalone_main_rank_prints_and_other_ranks_stay_quiet() -> None:
    done = _run_python("""
        from arena_assets.ranker.pipes import pipes_reporter
        for main in (True, False):
            with pipes_reporter(is_main_process=main) as reporter:
                reporter.info(f"info main={main}")
                reporter.warning(f"warning main={main}")
                reporter.report_materialization({"rows": main})
                reporter.report_check("rows_positive", passed=False, metadata={"observed": 0},
                                      severity="WARN")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[info] info main=True",
        "[info] materialization: rows=true",
        "[info] check rows_positive FAILED (WARN): observed=0",
    ]
    assert "warning main=True" in done.stderr and "warning main=False" in done.stderr


def test_standalone_exception_propagates() -> None:
    with pytest.raises(ValueError, match="boom"), pipes_reporter(is_main_process=True):
        raise ValueError("boom")


def test_other_ranks_never_open_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pipes.PIPES_CONTEXT_ENV_VAR, "not a pipes context")  # opening would fail to decode
    with pipes_reporter(is_main_process=False) as reporter:
        assert reporter._pipes is None


def test_second_open_in_one_process_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pipes.PIPES_CONTEXT_ENV_VAR, "not a pipes context")
    monkeypatch.setattr(pipes, "_opened", True)
    with pytest.raises(RuntimeError, match="open it once"), pipes_reporter(is_main_process=True):
        pass


def _run_child_with_dagster_client(tmp_path: Path, mode: str) -> tuple[dg.ExecuteInProcessResult,
                                                                        dg.DagsterInstance]:
    """Materialize an asset whose child is pipes_child, launched by Dagster's own subprocess client."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"mode": mode}))

    @dg.asset(check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset="child_asset")])
    def child_asset(context: dg.AssetExecutionContext,
                    client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        command = [sys.executable, "-m", CHILD_MODULE, "--config", str(spec)]
        invocation = client.run(context=context, command=command,
                                env={"PYTHONPATH": str(REPO_ROOT), "ACCELERATE_USE_CPU": "true"})
        return invocation.get_materialize_result(implicit_materialization=False)

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([child_asset], resources={"client": dg.PipesSubprocessClient()},
                            instance=instance, raise_on_error=False)
    return result, instance


@pytest.mark.slow
def test_reports_reach_dagster_with_typed_metadata(tmp_path: Path) -> None:
    result, _ = _run_child_with_dagster_client(tmp_path, "report")
    assert result.success
    [materialization] = result.asset_materializations_for_node("child_asset")
    metadata = materialization.metadata
    assert metadata["rows"] == dg.IntMetadataValue(3)
    assert metadata["accuracy"] == dg.FloatMetadataValue(0.75)
    assert metadata["notes"] == dg.MetadataValue.md("# fixture\nreported by rank 0")
    assert metadata["output"] == dg.MetadataValue.path("/tmp/fixture-output")
    assert metadata["dashboard"] == dg.MetadataValue.url("https://example.com/run/1")
    assert materialization.tags["dagster/data_version"] == "fixture-v1"
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == CHECK_NAME and check.passed


@pytest.mark.slow
def test_child_exception_is_sent_to_dagster_and_propagates(tmp_path: Path) -> None:
    result, instance = _run_child_with_dagster_client(tmp_path, "raise")
    assert not result.success  # the exception propagated: the child exited nonzero
    closed = [
        record.dagster_event for record in instance.all_logs(result.run_id)
        if record.dagster_event and "pipes closed with exception" in (record.user_message or "")
    ]
    assert len(closed) == 1
    assert CHILD_ERROR in closed[0].engine_event_data.error.message
