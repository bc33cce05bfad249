"""One trial without Ray: determinism, resume, divergence as an outcome, the flow-only baseline."""

import dataclasses
from pathlib import Path

import pytest
import torch

from ablate.config import EvalConfig, ObjectiveConfig, TrainConfig, TrialConfig
from ablate.results import TRAINING_STATS
from ablate.trial import SPIKE_MIN_HISTORY, Trial, ema_update, run_trial

TINY = str(Path(__file__).with_name("tiny_task.py"))
BASE = TrialConfig(
    task=TINY,
    objective=ObjectiveConfig(k_max=8),
    train=TrainConfig(steps=60, batch_size=32, log_every=10),
    eval=EvalConfig(steps=(1, 2, 8)),
)


def test_same_config_and_seed_give_the_same_numbers():
    a, b = run_trial(BASE), run_trial(BASE)
    assert a.status == b.status == "ok"
    assert a.curves == b.curves and a.metrics == b.metrics
    assert set(a.metrics) == {1, 2, 8} and set(a.metrics[1]) == {"mean_error", "spread"}
    c = run_trial(dataclasses.replace(BASE, seed=1))
    assert c.curves != a.curves


def test_resume_from_a_mid_run_state_continues_exactly():
    whole = run_trial(BASE)
    first = Trial(BASE)
    first.train(until=25)
    state = first.state_dict()
    torch.manual_seed(1234)  # the resumed process starts from other global RNG state
    second = Trial(BASE)
    second.load_state_dict(state)
    resumed = second.finish()
    assert resumed.curves == whole.curves and resumed.metrics == whole.metrics
    assert resumed.training_stats == whole.training_stats


def test_state_survives_torch_save_with_weights_only(tmp_path):
    """A checkpoint written to disk and read back with weights_only=True (as Ray's restore does)
    continues to exactly the numbers of an uninterrupted run."""
    trial = Trial(BASE)
    trial.train(until=5)
    torch.save(trial.state_dict(), tmp_path / "state.pt")
    again = Trial(BASE)
    again.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert again.step == 5
    whole = run_trial(BASE)
    resumed = again.finish()
    assert resumed.curves == whole.curves and resumed.metrics == whole.metrics


def test_exploding_loss_is_recorded_as_diverged_with_its_step():
    result = run_trial(BASE.with_levels({"divergence_loss": 1e-9}))
    assert result.status == "diverged" and result.diverged_step == 1 and result.metrics == {}


def test_nan_loss_is_recorded_as_diverged_not_raised():
    result = run_trial(
        BASE.with_levels(
            {"lr": 1e9, "lr_final": 1e9, "grad_clip": None, "teacher": "self", "eval_ema": None, "steps": 200}
        )
    )
    assert result.status == "diverged"
    assert 1 <= result.diverged_step <= 200
    assert result.curves[-1]["step"] == result.diverged_step


@pytest.mark.parametrize("baseline", [True, False])
def test_flow_baseline_trains_and_is_evaluated_told_d_min(baseline, monkeypatch):
    """Every call of the model class (student, teacher and the evaluated EMA copy) is recorded: the
    baseline only ever sees d = d_min; a shortcut model is evaluated told d = 1/K."""
    trial = Trial(BASE.with_levels({"family": "flow" if baseline else "shortcut_forcing"}))
    assert (trial.objective.bootstrap_fraction == 0.0) == baseline
    seen = []
    original = type(trial.model).forward
    monkeypatch.setattr(
        type(trial.model), "forward", lambda self, z, tau, d: (seen.append(d.clone()), original(self, z, tau, d))[1]
    )
    trial.train()
    assert all(torch.all(d == 1 / 8) for d in seen) == baseline
    seen.clear()
    result = trial.finish()
    assert len(seen) == sum(BASE.eval.steps)  # one call per sampling step, for K = 1, 2, 8
    told = [d.unique().tolist() for d in seen]
    expected = [[1 / 8]] * len(seen) if baseline else [[1 / k] for k in BASE.eval.steps for _ in range(k)]
    assert told == expected
    assert all(c["bootstrap_loss"] == 0 for c in result.curves) == baseline


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="train.lerning_rate: unknown key"):
        TrialConfig.from_dict({"train": {"lerning_rate": 1e-3}})
    with pytest.raises(ValueError, match="train.teacher: 'momentum' is not allowed"):
        TrialConfig.from_dict({"train": {"teacher": "momentum"}})
    with pytest.raises(ValueError, match="not a factor .did you mean 'k_max'"):
        BASE.with_levels({"k_max ": 4})


# --- paired streams, the evaluation EMA, what the stabilisers did, what the budget cost -------------------


def record_batches(trial: Trial, steps: int) -> list[tuple]:
    """(x1, noise, tau, d) of each training step, as the objective received them."""
    seen, loss = [], trial.objective.loss

    def spy(model, x1, noise, tau, d, **kwargs):
        seen.append((x1.clone(), noise.clone(), tau.clone(), d.clone()))
        return loss(model, x1, noise, tau, d, **kwargs)

    trial.objective.loss = spy
    trial.train(until=steps)
    return seen


def test_every_cell_of_a_seed_and_the_flow_baseline_see_the_same_data_and_noise():
    """One generator per stream: what an objective draws for (tau, d) (the baseline draws a permutation,
    the bootstrap_fraction path another) never shifts the data or noise another cell sees."""
    configs = [
        BASE,
        BASE.with_levels({"family": "flow"}),
        BASE.with_levels({"tau_sampling": "continuous", "bootstrap_fraction": 0.25}),
        BASE.with_levels({"step_sizes": "inverse"}),
    ]
    runs = [record_batches(Trial(config), 6) for config in configs]
    for other in runs[1:]:
        for (x1, noise, *_), (x1_other, noise_other, *_) in zip(runs[0], other, strict=True):
            assert torch.equal(x1, x1_other) and torch.equal(noise, noise_other)
    assert not all(torch.equal(a[2], b[2]) for a, b in zip(runs[0], runs[1]))  # their own (tau, d)
    seed_1 = record_batches(Trial(dataclasses.replace(BASE, seed=1)), 1)
    assert not torch.equal(seed_1[0][0], runs[0][0][0]) and not torch.equal(seed_1[0][1], runs[0][0][1])


def test_evaluation_ema_is_bias_corrected_the_initial_weights_get_no_weight():
    decay, steps = 0.9, 7
    trial = Trial(BASE.with_levels({"eval_ema": decay, "steps": steps}))
    history = []
    for _ in range(steps):
        trial.train(until=trial.step + 1)
        history.append([p.detach().clone() for p in trial.model.parameters()])
    weights = torch.tensor([decay ** (steps - i) for i in range(1, steps + 1)], dtype=torch.float64)
    weights /= weights.sum()
    for index, averaged in enumerate(trial.eval_model.parameters()):
        expected = sum(w * h[index].double() for w, h in zip(weights, history))
        torch.testing.assert_close(averaged.double(), expected, rtol=1e-5, atol=1e-6)


def test_ema_update_at_step_one_copies_and_decay_zero_follows_the_model():
    average, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ema_update(average, model, 0.999, step=1)
    assert torch.equal(average.weight, model.weight)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema_update(average, model, 0.0, step=2)
    assert torch.equal(average.weight, model.weight)


def test_training_stats_count_clipping_spikes_and_passes():
    clipped = run_trial(BASE.with_levels({"grad_clip": 1e-6}))
    assert list(clipped.training_stats) == list(TRAINING_STATS)
    assert clipped.training_stats["clipped_share"] == 1.0 and clipped.training_stats["max_grad_norm"] > 1e-6
    assert run_trial(BASE.with_levels({"grad_clip": None})).training_stats["clipped_share"] == 0.0
    assert run_trial(BASE.with_levels({"grad_clip": 1e6})).training_stats["clipped_share"] == 0.0

    flow = run_trial(BASE.with_levels({"family": "flow"})).training_stats
    assert flow["forward_passes"] == flow["backward_passes"] == BASE.train.steps  # one student pass per step
    quarter = run_trial(
        BASE.with_levels({"bootstrap_fraction": 0.25})
    ).training_stats  # 8 of 32 rows, two teacher calls
    assert quarter["forward_passes"] == BASE.train.steps * (1 + 2 * 0.25)
    own = run_trial(BASE.with_levels({"bootstrap_fraction": 0.25, "teacher": "self"})).training_stats  # counted too
    assert own["forward_passes"] == quarter["forward_passes"]


def test_a_loss_spike_is_a_loss_ten_times_the_running_median():
    trial = Trial(BASE)
    for _ in range(SPIKE_MIN_HISTORY - 1):
        trial._track_stability(1.0, 0.5)
    trial._track_stability(100.0, 0.5)  # too little history to judge
    assert trial.loss_spikes == 0
    trial._track_stability(10.5, 0.5)
    trial._track_stability(9.5, 0.5)
    assert trial.loss_spikes == 1 and trial.training_stats["loss_spikes"] == 1


def test_bootstrap_start_trains_flow_rows_only_until_then():
    trial = Trial(BASE.with_levels({"bootstrap_start": 4}))
    batches = record_batches(trial, 8)
    d_min = 1 / BASE.objective.k_max
    assert all(torch.all(d == d_min) for *_, d in batches[:4])
    assert all(torch.any(d > d_min) for *_, d in batches[4:])
    assert trial.training_stats["forward_passes"] > 8  # teacher calls began at step 5
