"""Packed trials: a member of a pack trains and scores exactly as the same config alone."""

import dataclasses
import time

import pytest
import torch
from conftest import TINY_TASK

from ablate.config import EvalConfig, ObjectiveConfig, TrainConfig, TrialConfig
from ablate.objective import ShortcutForcing, Variant
from ablate.packed_objective import Knobs, loss_every_row
from ablate.packing import Pack, PackingError, stacked_kwargs
from ablate.trial import Trial, run_trial

BASE = TrialConfig(
    task=TINY_TASK,
    objective=ObjectiveConfig(k_max=8),
    train=TrainConfig(steps=20, batch_size=32, log_every=5),
    eval=EvalConfig(steps=(1, 2, 8)),
)
MEMBERS = [  # 8 members: variants, seeds, the flow baseline, the paper's own teacher, knobs that vary
    BASE,
    dataclasses.replace(BASE, seed=1),
    BASE.with_levels({"bootstrap_space": "x", "half_step": "renoise", "tau2_weight": False}),
    BASE.with_levels({"family": "flow", "tau_sampling": "continuous"}),
    BASE.with_levels({"teacher": "self", "grad_clip": None}),
    BASE.with_levels(
        {"ramp": "flow", "bootstrap_weight": 0.5, "step_sizes": "inverse", "grad_clip": 1e-3, "eval_ema": None}
    ),
    BASE.with_levels({"bootstrap_fraction": 0.25, "teacher_decay": 0.9, "bootstrap_start": 5}),
    dataclasses.replace(BASE.with_levels({"tau_sampling": "continuous", "ramp": "none"}), seed=2),
]


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def assert_same_trial(member, alone) -> None:
    """A packed member's curves, metrics and training statistics equal the config's trial alone."""
    for mine, theirs in zip(member.curves, alone.curves, strict=True):
        for name in ("loss", "flow_loss", "bootstrap_loss", "grad_norm"):
            assert mine[name] == pytest.approx(theirs[name], rel=1e-6, abs=1e-12), name
    for k, metrics in alone.metrics.items():
        assert member.metrics[k] == pytest.approx(metrics, rel=1e-6, abs=1e-12)
    assert member.training_stats == pytest.approx(alone.training_stats, rel=1e-6)


@pytest.mark.parametrize("batched_evaluation", [True, False])
def test_each_member_of_a_pack_of_eight_matches_its_config_run_alone(float64, batched_evaluation):
    """Evaluated with the members' model calls batched (a pack on a GPU) or member by member (on a CPU)."""
    packed = Pack(MEMBERS, batched_evaluation=batched_evaluation).finish()
    for config, member in zip(MEMBERS, packed, strict=True):
        alone = run_trial(config)
        assert member.status == alone.status == "ok"
        assert [c["step"] for c in member.curves] == [c["step"] for c in alone.curves]
        assert_same_trial(member, alone)


SEQUENCE = TrialConfig(  # per-frame tau and d, a causal transformer, actions as a model keyword argument
    task="latent_world",
    task_params={"context": 2, "horizon": 2, "n_eval": 8, "draws": 2, "width": 16, "depth": 1, "heads": 2},
    objective=ObjectiveConfig(k_max=8),
    train=TrainConfig(steps=12, batch_size=8, log_every=4),
    eval=EvalConfig(steps=(1, 8)),
)


def test_sequence_members_with_actions_match_their_configs_run_alone(float64):
    configs = [
        SEQUENCE,
        dataclasses.replace(SEQUENCE, seed=1).with_levels({"half_step": "renoise", "bootstrap_space": "x"}),
        SEQUENCE.with_levels({"family": "flow"}),
    ]
    for config, member in zip(configs, Pack(configs, batched_evaluation=True).finish(), strict=True):
        alone = run_trial(config)
        assert_same_trial(member, alone)


def test_a_member_that_diverges_is_frozen_at_its_step_and_the_others_go_on(float64):
    configs = [BASE, BASE.with_levels({"divergence_loss": 1e-9}), dataclasses.replace(BASE, seed=1)]
    results = Pack(configs, batched_evaluation=True).finish()
    assert [r.status for r in results] == ["ok", "diverged", "ok"]
    assert results[1].diverged_step == 1 and results[1].metrics == {} and len(results[1].curves) == 1
    for index in (0, 2):
        assert_same_trial(results[index], run_trial(configs[index]))


def test_a_pack_of_one_and_models_with_buffers_match_their_configs_alone(float64):
    """A pack may shrink to one member (the others' results exist on resume): its evaluation calls then
    run as its model alone. Buffers are stacked per member like the weights (here a constant drawn at
    initialisation, so it differs by seed)."""
    with_buffer = dataclasses.replace(BASE, task_params={"model_quirk": "scale"})
    configs = [with_buffer, dataclasses.replace(with_buffer, seed=1), with_buffer.with_levels({"family": "flow"})]
    assert_same_trial(Pack(configs[:1], batched_evaluation=True).finish()[0], run_trial(configs[0]))
    for config, member in zip(configs, Pack(configs, batched_evaluation=True).finish(), strict=True):
        assert_same_trial(member, run_trial(config))


def test_frozen_layers_and_heads_the_loss_never_uses_stay_as_initialised_packed_as_alone(float64):
    """A world model's reward head gets no gradient from the x-prediction loss and a frozen layer none at
    all: alone, clipping skips them and Adam does not move them. A pack does the same (it once failed on
    their missing gradients and trained the frozen layer). One member's clip binds, so the norm counts."""
    heads = dataclasses.replace(BASE, task_params={"model_quirk": "heads"})
    configs = [
        heads,
        dataclasses.replace(heads, seed=1).with_levels({"bootstrap_space": "x", "grad_clip": 1e-3}),
        heads.with_levels({"family": "flow", "teacher": "self"}),
    ]
    pack = Pack(configs, batched_evaluation=True)
    for config, member, result in zip(configs, pack.members, pack.finish(), strict=True):
        alone = Trial(config)
        assert_same_trial(result, alone.finish())
        initial = Trial(config).model.state_dict()
        for model in (member.model, member.evaluation_weights, alone.model, alone.evaluation_weights):
            for name, value in model.state_dict().items():
                if name.startswith(("frozen.", "reward_head.")):
                    assert torch.equal(value, initial[name]), name
        for mine, theirs in ((member.model, alone.model), (member.evaluation_weights, alone.evaluation_weights)):
            for name, value in mine.state_dict().items():
                torch.testing.assert_close(value, theirs.state_dict()[name], rtol=1e-6, atol=1e-12)
        assert not torch.equal(alone.model.state_dict()["out.2.weight"], initial["out.2.weight"])  # it trained


def test_a_packs_time_is_shared_by_its_members():
    """train_seconds and eval_seconds of the members add up to the pack's wall time (each step's time
    split among the members it trained), so trials.csv's cost columns stay meaningful for packs; a
    member that diverged in training has no evaluation time."""
    pack = Pack([BASE, BASE.with_levels({"divergence_loss": 1e-9}), MEMBERS[2]], batched_evaluation=True)
    start = time.perf_counter()
    pack.train()
    training = time.perf_counter() - start
    start = time.perf_counter()
    results = pack.finish()
    evaluating = time.perf_counter() - start
    assert 0.5 * training < sum(r.train_seconds for r in results) <= training
    assert 0.5 * evaluating < sum(r.eval_seconds for r in results) <= evaluating
    assert results[1].status == "diverged" and results[1].eval_seconds == 0.0
    alone = Pack([BASE, BASE.with_levels({"divergence_loss": 1e-9})], batched_evaluation=True)
    alone.train()
    start = time.perf_counter()
    results = alone.finish()
    assert 0.5 * (time.perf_counter() - start) < results[0].eval_seconds <= time.perf_counter() - start


def test_on_a_cpu_a_pack_evaluates_member_by_member_by_default(monkeypatch):
    """Batched evaluation was measured slower on a CPU (docs/performance.md, Packed trials)."""
    monkeypatch.setattr(Pack, "_evaluation_forward", lambda *args: pytest.fail("batched on a CPU"))
    pack = Pack(MEMBERS[:2])
    assert pack.batched_evaluation is False
    assert all(r.status == "ok" and r.metrics for r in pack.finish())


def test_a_resumed_pack_gives_the_numbers_of_an_uninterrupted_one():
    whole = Pack(MEMBERS[:3]).finish()
    first = Pack(MEMBERS[:3])
    first.train(until=7)
    state = first.state_dict()
    torch.manual_seed(99)
    again = Pack(MEMBERS[:3])
    again.load_state_dict(state)
    assert again.step == 7
    for resumed, expected in zip(again.finish(), whole, strict=True):
        assert resumed.curves == expected.curves and resumed.metrics == expected.metrics


def test_configs_that_cannot_share_a_pack_are_refused_with_the_reason():
    for other in (
        BASE.with_levels({"batch_size": 16}),
        dataclasses.replace(BASE, task_params={"separation": 3.0}),
        dataclasses.replace(BASE, eval=EvalConfig(steps=(1, 8))),
    ):
        with pytest.raises(PackingError, match="^its trials differ in task, model, batch or step schedule$"):
            Pack([BASE, other])
    with pytest.raises(PackingError, match="^a pack needs at least one trial$"):
        Pack([])
    with pytest.raises(PackingError, match="^tasks whose models take non-tensor keyword arguments do not pack$"):
        stacked_kwargs([{"actions": torch.zeros(2), "mode": "fast"}] * 2, torch.device("cpu"))
    in_place = dataclasses.replace(BASE, task_params={"model_quirk": "counter"})
    with pytest.raises(PackingError, match=r"the model updates buffers in its forward \(extra\)"):
        Pack([in_place, dataclasses.replace(in_place, seed=1)])
    dropout = dataclasses.replace(BASE, task_params={"model_quirk": "dropout"})  # random draws inside vmap
    with pytest.raises(
        PackingError, match=r"^torch.func cannot vectorise the model \(RuntimeError: vmap: called random"
    ):
        Pack([dropout, dataclasses.replace(dropout, seed=1)])
    with pytest.raises(PackingError, match="only shortcut-forcing objectives pack"):
        Pack([BASE.with_levels({"teacher_context": "fixed"})])


def test_models_built_from_their_objectives_pack_only_with_the_same_objective(tmp_path):
    """One skeleton runs a pack: a make_model told the objective may build each cell its own model."""
    (tmp_path / "told.py").write_text(
        "from tiny_task import TinyNet, TinyTask\n\n\n"
        "class Told(TinyTask):\n"
        "    def make_model(self, objective):\n"
        "        return TinyNet(steps=objective.k_max + 1)\n\n\n"
        "def make_task():\n"
        "    return Told()\n"
    )
    told = dataclasses.replace(BASE, task=str(tmp_path / "told.py"))
    assert len(Pack([told, dataclasses.replace(told, seed=1)]).members) == 2
    with pytest.raises(PackingError, match="^its trials' models are built from different objectives$"):
        Pack([told, told.with_levels({"tau2_weight": False})])


def test_loss_every_row_equals_the_objective_row_by_row():
    """The vectorised form of Eq. 7-8 (both teacher calls on every row, toggles as tensors) gives
    ShortcutForcing.loss's per-row loss for every variant."""
    g = torch.Generator().manual_seed(3)
    net = Trial(BASE).model.double()
    for variant in Variant.all():
        for ramp in ("both", "flow", "none"):
            objective = ShortcutForcing(variant, k_max=8, ramp=ramp, bootstrap_weight=0.7)
            x1, noise = (
                torch.randn(64, 1, generator=g, dtype=torch.float64),
                torch.randn(64, 1, generator=g, dtype=torch.float64),
            )
            tau, d = objective.sample_tau_d((64,), generator=g)
            expected = objective.loss(net, x1, noise, tau, d).per_sample
            with torch.no_grad():
                per_row, is_boot = loss_every_row(net, net, x1, noise, tau, d, Knobs.of(objective, torch.float64))
            torch.testing.assert_close(per_row, expected.detach(), rtol=1e-10, atol=1e-12)
            assert torch.equal(is_boot, d > objective.d_min * (1 + 1e-6))
