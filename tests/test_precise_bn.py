"""Precise BatchNorm statistics before evaluations (`train.precise_bn_batches`): the running
averages lag weights that move fast (the demo's stage 2 read 18.6% top-1 from them at its
first evaluation, 32.2% from recomputed ones), so they are recomputed on the next training
batches, which training then takes unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import core.fit
from core.fit import fit
from core.lookahead import Lookahead
from core.trainer import Trainer
from tests.engine_helpers import NUM_CLASSES, metrics_rows, tiny_config, tiny_trainer
from tests.tensor_batches import TensorBatches


def test_lookahead_hands_out_peeked_batches_in_order_and_keeps_the_taken_position() -> None:
    source = TensorBatches(NUM_CLASSES, 2, 4, 8, seed=0)
    stream = Lookahead(source, iter(source.batches(0)))
    first = next(stream)
    assert stream.position() == {"index": 1}
    ahead = stream.peek(3)
    assert stream.position() == {"index": 1}, "looked-at batches are not taken"
    assert stream.peek(2) == ahead[:2]
    taken = [next(stream) for _ in range(4)]
    assert [t[1].tolist() for t in taken[:3]] == [a[1].tolist() for a in ahead]
    assert torch.equal(taken[3][0], source.micro_batch(4)[0]) and stream.position() == {"index": 5}
    assert not torch.equal(first[0], taken[0][0])
    short = Lookahead(source, iter([first, taken[0]]))  # a stream that ends
    assert len(short.peek(5)) == 2 and next(short) is first and next(short) is taken[0]
    with pytest.raises(StopIteration):
        next(short)


def _head_inputs(trainer: Trainer, batches) -> list[torch.Tensor]:
    norm = trainer.batch_norms()[0]
    seen: list[torch.Tensor] = []
    handle = norm.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach()))
    try:
        trainer.refresh_batch_norm(batches)
    finally:
        handle.remove()
    return seen


def test_refresh_is_the_plain_average_at_current_weights_and_training_goes_on_unchanged():
    source = TensorBatches(NUM_CLASSES, 4, 4, 32, seed=0)
    plain, refreshed = tiny_trainer("optim.lr=3e-3"), tiny_trainer("optim.lr=3e-3")
    assert plain.batch_norms(), "configs/tiny.yaml trains with temporal.head_norm=batch"
    plain_losses, refreshed_losses = [], []
    for trainer, losses in ((plain, plain_losses), (refreshed, refreshed_losses)):
        stream = iter(source.batches(0))
        for step in range(6):
            if step == 3 and trainer is refreshed:
                extra = [source.micro_batch(100 + i) for i in range(3)]
                features = _head_inputs(trainer, extra)
                norm = trainer.batch_norms()[0]
                assert len(features) == 3 and int(norm.num_batches_tracked) == 3
                means = torch.stack([f.mean(0) for f in features]).mean(0)
                variances = torch.stack([f.var(0, unbiased=True) for f in features]).mean(0)
                assert torch.allclose(norm.running_mean, means, atol=1e-6)
                assert torch.allclose(norm.running_var, variances, rtol=1e-5, atol=1e-6)
                assert norm.momentum == 0.1, "the training momentum is put back"
            losses.append(float(trainer.train_step(*next(stream))))
    assert plain_losses == refreshed_losses, "training must not see the refresh"


def test_fit_refreshes_before_the_final_evaluation_from_the_batches_after_the_last_step(
    tmp_path: Path,
) -> None:
    cfg = tiny_config(
        "train.steps=4",
        "train.eval_every=2",
        "train.precise_bn_batches=2",
        f"out_dir={tmp_path}",
    )
    trainer = Trainer(cfg, num_classes=NUM_CLASSES)
    source = TensorBatches(NUM_CLASSES, 4, 4, 32, seed=0)
    fit(cfg, trainer, source, _one_eval_batch)
    # steps 3-4 took the 2 batches looked at for the step-2 evaluation; the final refresh
    # looked at batches 4 and 5, which no step took
    assert source.served == 6
    norm = trainer.batch_norms()[0]
    saved, tracked = norm.running_mean.clone(), int(norm.num_batches_tracked)
    features = _head_inputs(trainer, [source.micro_batch(4), source.micro_batch(5)])
    assert tracked == 2 and torch.allclose(
        saved, torch.stack([f.mean(0) for f in features]).mean(0)
    )


def test_fit_losses_do_not_depend_on_the_refresh(tmp_path: Path) -> None:
    def losses(precise: int) -> list[float]:
        out = tmp_path / str(precise)
        _fit_tiny(out, "train.eval_every=2", f"train.precise_bn_batches={precise}")
        return [r["loss"] for r in metrics_rows(out) if "loss" in r]

    assert losses(0) == losses(3)


class _one_eval_batch:  # noqa: N801 (a factory: fit calls it to make the eval source)
    num_classes = NUM_CLASSES

    def __iter__(self):
        frames, labels = TensorBatches(NUM_CLASSES, 4, 4, 32, seed=9).micro_batch(0)
        yield frames[:, None], labels

    def stats(self) -> dict[str, float]:
        return {}


def _fit_tiny(out: Path, *overrides: str) -> Trainer:
    """A 4-step tiny run into `out`, logging every step."""
    out.mkdir()
    cfg = tiny_config("train.steps=4", "train.log_every=1", f"out_dir={out}", *overrides)
    trainer = Trainer(cfg, num_classes=NUM_CLASSES)
    fit(cfg, trainer, TensorBatches(NUM_CLASSES, 4, 4, 32, seed=0), _one_eval_batch)
    return trainer


def test_the_trained_model_does_not_depend_on_the_evaluations_refreshes(tmp_path: Path) -> None:
    """Why an evaluation's refresh is that evaluation's cost, not training's: the final refresh
    recomputes every statistic, so evaluating (and refreshing) on the way changes nothing."""
    precise = "train.precise_bn_batches=3"
    quiet = _fit_tiny(tmp_path / "quiet", precise, "train.eval_every=0")
    curious = _fit_tiny(tmp_path / "curious", precise, "train.eval_every=1")
    a, b = quiet.engine.module.state_dict(), curious.engine.module.state_dict()
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_an_evaluations_refresh_counts_in_its_point_and_only_the_final_one_in_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = core.fit._refresh_batch_norm
    refreshes: list[int] = []

    def slow_refresh(trainer, stream, batches):  # as if each refresh took 100 s (50 s CPU)
        refreshes.append(trainer.step)
        real(trainer, stream, batches)
        return 100.0, 50.0

    monkeypatch.setattr(core.fit, "_refresh_batch_norm", slow_refresh)
    out = tmp_path / "run"
    _fit_tiny(out, "train.precise_bn_batches=2", "train.eval_every=1")
    evals = [r for r in metrics_rows(out) if r.get("event") == "eval"]
    assert refreshes == [1, 2, 3, 4] and [r["step"] for r in evals] == [1, 2, 3, 4]
    for r in evals:  # each point: training so far plus its own refresh, never an earlier one
        assert 100.0 <= r["train_time_s"] < 200.0 and 50.0 <= r["train_cpu_s"] < 100.0
    assert [r["precise_bn_s"] for r in evals] == [100.0] * 4
    summary = json.loads((out / "summary.json").read_text())
    assert 100.0 <= summary["train_time_s"] < 200.0, "one refresh in training: the final one"
    times = [r["train_time_s"] for r in evals]
    assert times == sorted(times)
