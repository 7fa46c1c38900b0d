"""Training passes replayed from CUDA graphs (ranker/cuda_graphs.py), and the mask-free pass they capture."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer

from arena_assets.ranker import modeling, trainer
from arena_assets.ranker.config import TrainConfig
from arena_assets.ranker.cuda_graphs import GraphedPasses, check_graphable
from arena_assets.ranker.data import read_pairs
from arena_assets.ranker.head import LetterHead, letter_logits
from arena_assets.ranker.lora_dropout import DropoutLinear
from arena_assets.ranker.losses import hard_label_loss
from arena_assets.ranker.pipes import Reporter
from arena_assets.ranker.prompt import letter_token_ids
from arena_assets_tests.ranker.conftest import PairFiles
from arena_assets_tests.ranker.test_fast_paths import _batch, _move_lora_b

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_rows_of_one_length_give_the_same_logits_without_a_mask(demo_backbone: Path, attention: str) -> None:
    """The pass a graph captures: no mask, the attention causal by itself (sdpa) or from a mask of ones."""
    model = modeling.load_backbone(str(demo_backbone), dtype=torch.float32, device=torch.device("cpu"),
                                   attn_implementation=attention)  # fmt: skip
    ids = torch.randint(10, 1000, (3, 40), generator=torch.Generator().manual_seed(0))
    letters = letter_token_ids(AutoTokenizer.from_pretrained(demo_backbone))
    with torch.no_grad():
        masked = letter_logits(model, ids, torch.ones_like(ids), letters)
        unmasked = letter_logits(model, ids, None, torch.tensor(letters))
        reversed_rows = letter_logits(model, ids.flip(1), None, letters)
    torch.testing.assert_close(unmasked, masked, rtol=0, atol=1e-5)  # the masked pass is causal
    assert not torch.allclose(reversed_rows, unmasked, atol=1e-3)  # and the order of the tokens matters


def test_a_pass_of_rows_of_one_length_gets_no_mask() -> None:
    cpu, unpacked = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(pack_sequences=False)
    run = SimpleNamespace(state=trainer.TrainState(), accelerator=cpu, config=unpacked,
                          tokenizer=SimpleNamespace(pad_token_id=0))  # fmt: skip
    features = [trainer.feature([5, 6, 7], 0, "hard"), trainer.feature([8, 9, 10], 1, "hard")]
    (ids, mask), targets = trainer.micro_batch(run, features)
    assert mask is None and ids.tolist() == [[5, 6, 7], [8, 9, 10]] and targets["labels"].tolist() == [0, 1]
    (ids, mask), _ = trainer.micro_batch(run, [*features, trainer.feature([4, 4], 0, "hard")])
    assert mask.tolist()[-1] == [1, 1, 0] and run.state.padded_tokens == 1


def test_passes_that_cannot_be_captured_are_refused_with_the_setting_to_change() -> None:
    config = SimpleNamespace(gradient_checkpointing=0.5, pack_sequences=True, compile_layers=False)
    replaying = DropoutLinear(8, 4, bias=False)
    replaying.dropout_p = 0.1
    with pytest.raises(ValueError) as raised:
        check_graphable(config, torch.device("cpu"), 2, torch.nn.Sequential(replaying))
    message = str(raised.value)
    for part in ("needs a CUDA device", "one process (this run has 2)", "gradient_checkpointing to 0",
                 "pack_sequences to false", "fused_lora_dropout on"):  # fmt: skip
        assert part in message, message
    replaying.fused = True
    config = SimpleNamespace(gradient_checkpointing=0.0, pack_sequences=False, compile_layers=False)
    with pytest.raises(ValueError, match="needs a CUDA device") as raised:
        check_graphable(config, torch.device("cpu"), 1, torch.nn.Sequential(replaying))
    assert ";" not in str(raised.value)  # the fused dropout is capturable: the device is all that is wrong


@pytest.mark.skipif(torch.cuda.is_available(), reason="the trainer takes the GPU: tests below use it")
def test_the_trainer_refuses_cuda_graphs_on_the_cpu(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = make_train_config(small_files, tmp_path / "adapter", cuda_graphs=True, max_steps=1)
    with pytest.raises(ValueError, match="cuda_graphs: it needs a CUDA device"):
        trainer.train(config)
    assert not (tmp_path / "adapter").exists()


def test_an_eager_pass_leaves_no_autograd_graph_to_a_capture_later_in_its_step(
    small_files: PairFiles,
    make_train_config: Callable[..., TrainConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A padded micro-batch runs eagerly, on the default stream; a capture later in the same step fails on
    any AccumulateGrad node still alive from it. So no eager pass's loss, which holds its graph, may outlive
    the pass: a stand-in for GraphedPasses (which needs CUDA) checks that when it is called."""
    run = trainer.setup(make_train_config(small_files, tmp_path / "adapter", max_steps=1), Accelerator(),
                        Reporter())  # fmt: skip
    eager_losses: list[weakref.ref] = []
    pass_loss = trainer.pass_loss

    def recorded(run: trainer.Run, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = pass_loss(run, logits, targets)
        eager_losses.append(weakref.ref(loss))
        return loss

    class Captures:
        calls = 0

        def __call__(self, ids: torch.Tensor, targets: dict, weight: float) -> torch.Tensor:
            assert eager_losses and all(ref() is None for ref in eager_losses), "an eager loss outlived it"
            self.calls += 1
            loss = pass_loss(run, run.head(ids, None), targets)
            (loss * weight).backward()
            return loss.detach()

        def reset_grads(self) -> None:
            pass

    monkeypatch.setattr(trainer, "pass_loss", recorded)
    run.graphs = Captures()
    step = _padded_then_one_length(run)
    _, tokens, _ = trainer.train_step(run, step)
    assert run.graphs.calls == 1 and len(eager_losses) == 1
    assert tokens == sum(run.encoded.lengths[r] for rows in step for r in rows)


def _padded_then_one_length(run: trainer.Run) -> list[list[int]]:
    """A step's micro-batches: the shortest row beside the longest (padded, so eager), then the shortest
    alone (rows of one length, so captured)."""
    lengths = run.encoded.lengths
    rows = range(len(lengths))
    short, long = min(rows, key=lengths.__getitem__), max(rows, key=lengths.__getitem__)
    assert lengths[short] < lengths[long]
    return [[short, long], [short]]


def _graphed_head(config: TrainConfig) -> tuple[LetterHead, list[torch.nn.Parameter]]:
    set_seed(0)
    model, _ = modeling.build_model(config, Accelerator().device)
    _move_lora_b(model)  # lora_B nonzero: the adapters, and so their dropout, reach the loss
    head = LetterHead(model, letter_token_ids(AutoTokenizer.from_pretrained(config.backbone))).cuda().train()
    return head, [p for p in model.parameters() if p.requires_grad]


@pytest.mark.gpu
@gpu
def test_replayed_passes_give_eager_gradients_and_new_dropout_masks(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    tokenizer_dir = make_train_config(small_files, tmp_path).backbone
    batch = _batch(AutoTokenizer.from_pretrained(tokenizer_dir), read_pairs(small_files.train).head(4),
                   labels=True)  # fmt: skip
    width = int(batch["attention_mask"].sum(1).min())
    ids, labels = batch["input_ids"][:, :width].cuda(), batch["labels"].cuda()  # rows of one length

    def config(dropout: float) -> TrainConfig:
        return make_train_config(small_files, tmp_path, precision="bf16", gradient_checkpointing=0.0,
                                 lora_dropout=dropout, cuda_graphs=True)  # fmt: skip

    head, params = _graphed_head(config(0.0))
    hard_label_loss(head(ids, None), labels).backward()
    eager = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    graphs = GraphedPasses(lambda i, t: hard_label_loss(head(i, None), t["labels"]), params)
    losses = [graphs(ids, {"labels": labels}, 0.5) for _ in range(2)]  # two half-weight passes: one gradient
    assert len(graphs.captured) == 1 and graphs.replays == 2
    assert torch.equal(losses[0], losses[1])
    for grad, expected in zip(params, eager, strict=True):
        torch.testing.assert_close(grad.grad, expected, rtol=1e-2, atol=1e-4)
    graphs.reset_grads()
    assert all(not p.grad.any() for p in params)

    head, params = _graphed_head(config(0.1))
    graphs = GraphedPasses(lambda i, t: hard_label_loss(head(i, None), t["labels"]), params)
    losses = [graphs(ids, {"labels": labels}, 1.0) for _ in range(2)]
    assert not torch.equal(losses[0], losses[1]), "each replay must draw new dropout masks"


@pytest.mark.gpu
@gpu
def test_training_with_cuda_graphs_follows_eager_training(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    """The trainer's whole loop, on rows truncated to one length (the demo rows all reach 176 tokens, 144 of
    them the prompt's fixed text): the same losses, every pass replayed."""

    def run(graphs: bool) -> dict:
        config = make_train_config(small_files, tmp_path / f"graphs_{graphs}", precision="bf16",
                                   gradient_checkpointing=0.0, lora_dropout=0.0, max_length=176, max_steps=4,
                                   log_every_steps=1, cuda_graphs=graphs)  # fmt: skip
        return trainer.train(config)

    eager, graphed = run(False), run(True)
    assert graphed["cuda_graph_shapes"] == 1 and graphed["cuda_graph_replays"] >= 4
    losses = torch.tensor([loss for _, loss in eager["train_loss_curve"]])
    replayed = torch.tensor([loss for _, loss in graphed["train_loss_curve"]])
    torch.testing.assert_close(replayed, losses, rtol=0, atol=2e-2)


@pytest.mark.gpu
@gpu
def test_a_step_that_captures_after_a_padded_pass_follows_eager_training(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    """Each step runs a padded micro-batch eagerly, on the default stream, and then rows of one length,
    captured the first time: the capture meets nothing of the eager pass, and the steps' losses and gradient
    norms are eager training's."""

    def steps(graphs: bool) -> tuple[list[tuple[float, float]], trainer.Run]:
        config = make_train_config(small_files, tmp_path / f"graphs_{graphs}", precision="bf16",
                                   gradient_checkpointing=0.0, lora_dropout=0.0, max_steps=3,
                                   cuda_graphs=graphs)  # fmt: skip
        set_seed(config.seed)
        run = trainer.setup(config, Accelerator(mixed_precision="no"), Reporter())
        step = _padded_then_one_length(run)
        figures = []
        for _ in range(3):
            loss, _, grad_norm = trainer.train_step(run, step)
            figures.append((loss.item(), grad_norm.item()))
        return figures, run

    eager, _ = steps(graphs=False)
    graphed, run = steps(graphs=True)
    assert run.graphs is not None and len(run.graphs.captured) == 1 and run.graphs.replays == 3
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(eager), rtol=2e-2, atol=2e-2)
