"""Packed evaluation: each member runs its own task evaluation; their model calls run as one."""

import warnings

import pytest
import torch
from test_packing import MEMBERS, SEQUENCE

from ablate.packed_evaluation import BatchedCalls, MemberModel
from ablate.packing import Pack
from ablate.trial import Trial


def scaled_models(n: int) -> list[torch.nn.Module]:
    """Member i's model multiplies z by (i + 1): a batched call that mixed members up would show."""

    class Scale(torch.nn.Module):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.factor = torch.nn.Parameter(torch.tensor(factor))

        def forward(self, z, tau, d, **kwargs):
            return z * self.factor + kwargs.get("shift", 0)

    return [Scale(i + 1.0) for i in range(n)]


def batched_calls(models: list[torch.nn.Module], log: list) -> BatchedCalls:
    factors = torch.stack([m.factor.detach() for m in models])

    def batched(members, z, tau, d, kwargs):
        log.append(list(members))
        shape = (len(members), *[1] * (z.ndim - 1))
        return z * factors[members].reshape(shape) + kwargs.get("shift", 0)

    return BatchedCalls(batched)


def test_calls_in_step_run_as_one_batched_call_per_round_and_each_member_gets_its_own_slice():
    models, log = scaled_models(3), []
    calls = batched_calls(models, log)

    def job(index: int) -> list[float]:
        model = MemberModel(models[index], calls, index)
        z = torch.ones(4)
        return [float(model(z * step, z, z).sum()) for step in range(1, 4)]

    results = calls.run({i: (lambda i=i: job(i)) for i in range(3)})
    assert log == [[0, 1, 2]] * 3  # three rounds, every member in each
    assert results == {i: [4.0 * (i + 1) * step for step in range(1, 4)] for i in range(3)}


def test_calls_that_do_not_stack_run_alone_and_members_that_finish_early_do_not_stall_the_others():
    models, log = scaled_models(3), []
    calls = batched_calls(models, log)

    def job(index: int) -> list[float]:
        model = MemberModel(models[index], calls, index)
        outputs = []
        for step in range(index + 1):  # member 0 calls once, member 2 three times
            z = torch.ones(4 if index < 2 else 5)  # member 2's calls have another shape
            kwargs = {"shift": 1} if index == 1 and step == 0 else {}  # a non-tensor argument
            outputs.append(float(model(z, z, z, **kwargs).sum()))
        return outputs

    results = calls.run({i: (lambda i=i: job(i)) for i in range(3)})
    assert results == {0: [4.0], 1: [12.0, 8.0], 2: [15.0] * 3}
    assert log == []  # no two calls matched: each ran as its member's model alone


def test_a_failing_member_is_raised_once_the_others_have_finished():
    models, log = scaled_models(2), []
    calls = batched_calls(models, log)
    finished = []

    def job(index: int) -> None:
        model = MemberModel(models[index], calls, index)
        z = torch.ones(2)
        model(z, z, z)
        if index == 0:
            raise RuntimeError("member 0 failed")
        model(z, z, z)
        finished.append(index)

    with pytest.raises(RuntimeError, match="member 0 failed"):
        calls.run({i: (lambda i=i: job(i)) for i in range(2)})
    assert finished == [1]


@pytest.mark.parametrize("configs", [MEMBERS[:4], [SEQUENCE, SEQUENCE.with_levels({"family": "flow"})]])
def test_a_packs_evaluation_makes_one_batched_call_per_model_call_of_a_member_alone(configs, monkeypatch):
    """In step: every model call of the evaluation (K steps per K, rollouts for a world) is one
    vectorised call over all live members, none runs alone; and a member scores what it scores alone.
    No call falls back to a per-member loop (torch warns when vmap has no batching rule, as for the
    transformer's fused eval-mode kernel), and the global fast-path switch is left as it was."""
    alone = Trial(configs[0])
    alone.train()
    calls_alone = []
    alone.evaluation_weights.register_forward_hook(lambda *_: calls_alone.append(1))
    expected = alone.evaluate().metrics

    group_sizes = []
    forward = Pack._evaluation_forward

    def counting(self, members, *args):
        group_sizes.append(len(members))
        return forward(self, members, *args)

    monkeypatch.setattr(Pack, "_evaluation_forward", counting)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = Pack(configs, batched_evaluation=True).finish()
    assert not [w for w in caught if "batching rule" in str(w.message)]
    assert torch.backends.mha.get_fastpath_enabled()
    assert group_sizes == [len(configs)] * len(calls_alone)
    for k, metrics in expected.items():
        assert results[0].metrics[k] == pytest.approx(metrics, rel=1e-3, abs=1e-6)
    assert all(r.eval_seconds > 0 and r.train_seconds > 0 for r in results)


def test_a_member_model_is_its_members_weights_to_the_sampler():
    """The sampler asks the model for its device and switches it to eval mode: both are the member's."""
    weights = scaled_models(1)[0]
    model = MemberModel(weights, batched_calls([weights], []), 0)
    assert list(model.parameters()) == list(weights.parameters())
    model.eval()
    assert not weights.training
