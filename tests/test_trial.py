"""One trial without Ray: determinism, resume, divergence as an outcome, the flow-only baseline."""

from pathlib import Path

import pytest
import torch

from ablate.trial import Trial, resolve_config, run_trial

TINY = str(Path(__file__).with_name("tiny_task.py"))
BASE = dict(task=TINY, k_max=8, train_steps=60, batch_size=32, log_every=10, eval_steps=[1, 2, 8])


def test_same_config_and_seed_give_the_same_numbers():
    a, b = run_trial(BASE), run_trial(BASE)
    assert a.status == b.status == "ok"
    assert a.curves == b.curves and a.metrics == b.metrics
    assert set(a.metrics) == {1, 2, 8} and set(a.metrics[1]) == {"mean_error", "spread"}
    c = run_trial({**BASE, "seed": 1})
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
    result = run_trial({**BASE, "divergence_loss": 1e-9})
    assert result.status == "diverged" and result.diverged_step == 1 and result.metrics == {}


def test_nan_loss_is_recorded_as_diverged_not_raised():
    result = run_trial(
        {**BASE, "lr": 1e9, "lr_final": 1e9, "grad_clip": None, "teacher": "self", "eval_ema": None, "train_steps": 200}
    )
    assert result.status == "diverged"
    assert 1 <= result.diverged_step <= 200
    assert result.curves[-1]["step"] == result.diverged_step


@pytest.mark.parametrize("baseline", [True, False])
def test_flow_baseline_trains_and_is_evaluated_told_d_min(baseline, monkeypatch):
    """Every call of the model class (student, teacher and the evaluated EMA copy) is recorded: the
    baseline only ever sees d = d_min; a shortcut model is evaluated told d = 1/K."""
    trial = Trial({**BASE, "family": "flow" if baseline else "shortcut_forcing"})
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
    assert len(seen) == sum(BASE["eval_steps"])  # one call per sampling step, for K = 1, 2, 8
    told = [d.unique().tolist() for d in seen]
    expected = [[1 / 8]] * len(seen) if baseline else [[1 / k] for k in BASE["eval_steps"] for _ in range(k)]
    assert told == expected
    assert all(c["bootstrap_loss"] == 0 for c in result.curves) == baseline


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="lerning_rate"):
        resolve_config({"lerning_rate": 1e-3})
    with pytest.raises(ValueError, match="teacher"):
        resolve_config({"teacher": "momentum"})
