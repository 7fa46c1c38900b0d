"""The predictor: test-time augmentation on the least certain rows, its time budget, its precision, the
`arena predict` and offline-bundle routes, and a model card whose snippet scores like the ranker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from arena_assets import cli
from arena_assets.assets import layout
from arena_assets.ranker import predict as predict_module
from arena_assets.ranker.card import SNIPPET
from arena_assets.ranker.config import PredictConfig
from arena_assets.ranker.data import encode_frame
from arena_assets.ranker.evaluation import prob_b
from arena_assets.ranker.modeling import resolve_dtype
from arena_assets.ranker.predict import Predictor, least_certain_first, predict_frame
from arena_assets_tests.demo_graph import REPO_ROOT, DemoRun

ARENA = str(Path(sys.executable).with_name("arena"))


class FakePredictor:
    """Fixed letter logits per row id and order; records which rows were scored swapped."""

    def __init__(self, first: dict[str, list[float]], swapped: dict[str, list[float]], **config: Any) -> None:
        self.first, self.swapped = first, swapped
        self.config = PredictConfig(**config)
        self.swapped_calls: list[list[str]] = []

    def logits(self, rows: pd.DataFrame, *, swapped: bool) -> np.ndarray:
        if swapped:
            self.swapped_calls.append(rows["id"].tolist())
        table = self.swapped if swapped else self.first
        return np.array([table[i] for i in rows["id"]], dtype=np.float32)


def _rows(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "prompt": "q", "response_a": "a", "response_b": "b"})


# Margins |p(A) - p(B)| grow with the gap between the two logits: r3 < r1 < r5 < r0 < r4 < r2.
FIRST = {"r0": [2.0, 0.5], "r1": [0.0, 0.4], "r2": [-3.0, 2.0], "r3": [0.1, 0.0], "r4": [0.0, 2.5],
         "r5": [1.0, 0.2]}  # fmt: skip
# The swapped order shows response_b as A: its column 0 is evidence for the original B.
SWAPPED = {"r0": [0.0, 1.0], "r1": [1.5, -0.5], "r2": [2.0, -2.0], "r3": [2.0, 0.0], "r4": [1.0, 0.0],
           "r5": [0.0, 0.0]}  # fmt: skip


def test_least_certain_rows_are_scored_swapped_and_averaged_the_right_way_round() -> None:
    fake = FakePredictor(FIRST, SWAPPED, tta_share=0.5)
    frame = predict_frame(fake, _rows(list(FIRST)))  # type: ignore[arg-type]

    order = least_certain_first(np.array(list(FIRST.values())))
    assert [list(FIRST)[i] for i in order] == ["r3", "r1", "r5", "r0", "r4", "r2"]
    assert fake.swapped_calls == [["r3", "r1", "r5"]]  # exactly the half that was least certain
    assert frame.set_index("id")["both_orders"].to_dict() == {
        "r0": False, "r1": True, "r2": False, "r3": True, "r4": False, "r5": True}  # fmt: skip
    for row in frame.itertuples():
        first = np.array(FIRST[row.id])
        if row.both_orders:  # A's evidence: first[0] and the swapped order's column 1
            expected = np.array([(first[0] + SWAPPED[row.id][1]) / 2, (first[1] + SWAPPED[row.id][0]) / 2])
        else:
            expected = first
        assert row.prob_b == pytest.approx(prob_b(expected[None])[0])
        assert row.prob_a == pytest.approx(1 - row.prob_b)
        assert row.winner == ("model_b" if row.prob_b > 0.5 else "model_a")
    # r3 leans A in one order (0.1 vs 0.0) and clearly B once its swap is counted.
    assert frame.set_index("id").loc["r3", "winner"] == "model_b"


def test_the_swapped_pass_stops_when_its_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict_module, "SWAP_CHUNK_ROWS", 2)
    fake = FakePredictor(FIRST, SWAPPED, tta_share=1.0, tta_seconds=10.0)
    ticks = iter([100.0, 104.0, 109.0, 111.0])  # start (deadline 110), then before each chunk
    frame = predict_frame(fake, _rows(list(FIRST)), clock=lambda: next(ticks))  # type: ignore[arg-type]

    assert fake.swapped_calls == [["r3", "r1"], ["r5", "r0"]]  # the third chunk came after the deadline
    assert int(frame["both_orders"].sum()) == 4


def test_no_tta_scores_one_order() -> None:
    fake = FakePredictor(FIRST, SWAPPED, tta_share=0.0)
    frame = predict_frame(fake, _rows(list(FIRST)))  # type: ignore[arg-type]
    assert fake.swapped_calls == [] and not frame["both_orders"].any()


def test_auto_precision_on_a_gpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    # A T4: bf16 exists only through emulation.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_dtype("auto", cuda) == torch.float16
    assert resolve_dtype("auto", cuda, training=True) == torch.float32  # fp16 training needs loss scaling
    assert resolve_dtype("bf16", cuda) == torch.bfloat16 and resolve_dtype("fp16", cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an H100
    assert resolve_dtype("auto", cuda) == resolve_dtype("auto", cuda, training=True) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def _final_model(demo_run: DemoRun) -> Path:
    return layout.model_dir(demo_run.settings, "final_model")


@pytest.mark.slow
def test_the_last_layer_at_the_read_rows_gives_the_same_logits(demo_run: DemoRun) -> None:
    rows = pd.read_parquet(layout.rows_path(demo_run.settings, "wsdm_test")).head(16)
    logits = {}
    for only in (False, True):
        config = PredictConfig(model=str(_final_model(demo_run)), precision="fp32", head_rows_only=only)
        logits[only] = Predictor.load(config).logits(rows, swapped=False)
    np.testing.assert_allclose(logits[True], logits[False], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_packed_passes_give_the_padded_logits(demo_run: DemoRun) -> None:
    """Rows end to end, the system prompt once a pass, attended a row at a time or on whole rows through
    SDPA: the padded batches' logits in both orders, up to fp32 summation order (as the scorer's test)."""
    rows = pd.read_parquet(layout.rows_path(demo_run.settings, "wsdm_test")).head(16)
    model = str(_final_model(demo_run))
    padded = Predictor.load(PredictConfig(model=model, precision="fp32"))
    for packing in ({"pack_sequences": True}, {"pack_sequences": True, "sdpa_row_multiple": 64}):
        packed = Predictor.load(PredictConfig(model=model, precision="fp32", token_budget=2048, **packing))
        for swapped in (False, True):
            np.testing.assert_allclose(packed.logits(rows, swapped=swapped),
                                       padded.logits(rows, swapped=swapped), rtol=0, atol=1e-4,
                                       err_msg=f"{packing}, swapped {swapped}")  # fmt: skip
    with pytest.raises(ValueError, match="set pack_sequences true"):
        PredictConfig(model=model, sdpa_row_multiple=64)


# `arena predict` runs in this process (cli.main is the console script's entry point): a child would spend
# most of its seconds importing torch. The bundle test below runs the `arena` script itself.
@pytest.mark.slow
def test_arena_predict_on_a_file_equals_the_submission_asset(
    demo_run: DemoRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test = layout.rows_path(demo_run.settings, "wsdm_test")
    argv = ["predict", "--model", str(_final_model(demo_run)), str(test), str(tmp_path / "predictions.csv"),
            "--submission", str(tmp_path / "submission.csv")]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == len(pd.read_parquet(test))
    ours = pd.read_csv(tmp_path / "submission.csv")
    pd.testing.assert_frame_equal(ours, pd.read_csv(layout.submission_path(demo_run.settings)))
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns) == list(predict_module.PREDICTION_COLUMNS)


@pytest.mark.slow
def test_the_run_writes_what_it_measured(demo_run: DemoRun, tmp_path: Path) -> None:
    """metrics_path: the returned figures as JSON; the tokens counted are every encoded row's, both orders."""
    test = layout.rows_path(demo_run.settings, "wsdm_test")
    metrics_path = tmp_path / "m" / "m.json"
    config = PredictConfig(model=str(_final_model(demo_run)), input_path=str(test),
                           output_path=str(tmp_path / "p.csv"), metrics_path=str(metrics_path))  # fmt: skip
    metrics = predict_module.predict(config)
    assert json.loads(metrics_path.read_text()) == pytest.approx(metrics)
    predictor = Predictor.load(config)
    rows = predict_module.read_pairs_file(test, "id")
    expected = sum(
        len(ids) for swapped in (False, True)
        for ids in encode_frame(predictor.template, rows, max_length=predictor.config.max_length,
                                rebalance=True, swapped=swapped).input_ids
    )  # fmt: skip
    assert metrics["tokens_scored"] == expected and metrics["rows_both_orders"] == len(rows)
    assert metrics["tokens_per_second"] == pytest.approx(expected / metrics["predict_seconds"])


@pytest.mark.slow
def test_arena_predict_one_pair(demo_run: DemoRun, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model", str(_final_model(demo_run)), "--prompt", "How do I sort a list?",
            "--response-a", "Sorry, I cannot help with that.",
            "--response-b", "Certainly: first, call sorted(); for example, sorted([3, 1])."]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["prob_a"] + result["prob_b"] == pytest.approx(1.0) and result["both_orders"]
    assert result["winner"] in {"model_a", "model_b"}
    assert cli.main([*argv, "--pack-sequences"]) == 0  # the same pair, packed: the same probabilities
    packed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert packed["prob_b"] == pytest.approx(result["prob_b"], abs=1e-4)
    assert packed["winner"] == result["winner"]


@pytest.mark.slow
def test_the_model_card_snippet_scores_like_the_ranker(demo_run: DemoRun) -> None:
    model = _final_model(demo_run)
    card = (model / "README.md").read_text()
    assert "```python" in card and str(Path.cwd()) not in card and str(REPO_ROOT) not in card
    assert "/" not in json.loads((model / "ranker.json").read_text())["backbone"]
    adapter = layout.model_dir(demo_run.settings, "stage2_adapter")
    assert "/" not in json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert (adapter / "README.md").is_file() and "[More Information Needed]" not in (
        adapter / "README.md"
    ).read_text()

    namespace: dict[str, Any] = {"json": json}
    exec(SNIPPET.format(model_dir=model), namespace)  # noqa: S102 - the card's own code, run as a user would
    pair = ("Was ist ein Beispiel?", "Leider kann ich nicht helfen.", "Natürlich, zum Beispiel: erst dies.")
    predictor = Predictor.load(PredictConfig(model=str(model), precision="fp32", tta_share=0.0))
    ranker = predict_frame(
        predictor,
        pd.DataFrame([dict(zip(["prompt", "response_a", "response_b"], pair, strict=True), id="x")]),
    )
    assert namespace["p_b_wins"](*pair) == pytest.approx(ranker["prob_b"].iloc[0], abs=1e-5)


@pytest.mark.slow
def test_the_bundle_installs_offline_and_predicts(demo_run: DemoRun, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    done = subprocess.run(
        [ARENA, "bundle", "--model", str(_final_model(demo_run)), str(bundle)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in bundle.iterdir()) == ["model", "predict.py", "wheels"]

    # A fresh environment that has what a GPU notebook image has, and not this checkout.
    notebook = tmp_path / "notebook"
    venv.EnvBuilder(with_pip=True).create(notebook)
    python = notebook / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    image = next(p for p in sys.path if p.endswith("site-packages"))
    Path(site, "notebook_image.pth").write_text(image + "\n")  # torch, transformers, pandas: no arena_assets
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            *map(str, (bundle / "wheels").glob("*.whl")),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    test = layout.rows_path(demo_run.settings, "wsdm_test")
    run = subprocess.run(
        [
            str(python),
            str(bundle / "predict.py"),
            "--test",
            str(test),
            "--out",
            str(tmp_path / "submission.csv"),
            "--predictions",
            str(tmp_path / "p.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    where = subprocess.run(
        [str(python), "-c", "import arena_assets; print(arena_assets.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert str(notebook) in where  # the bundle's wheel, not this checkout
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "submission.csv"), pd.read_csv(layout.submission_path(demo_run.settings))
    )
