"""Packed evaluation: every member runs its task's own evaluation; their model calls run as one.

A task's evaluation is ordinary code (sample with K steps, roll a world out, score the samples) and
its model calls are what costs, on a GPU above all: K launches of a small model per member. So each
live member evaluates in its own thread, through the unchanged ``Trial.evaluate``, with a
``MemberModel`` as its sampler's model: its forward hands ``(z, tau, d, kwargs)`` to ``BatchedCalls``
and waits. Once every running member waits (members of a pack share the task, the evaluation seed and
the step counts, so they call in step), the calls of one shape run as one vectorised forward of the
pack and each member gets its slice. A call that matches no other (another shape, a non-tensor
argument) runs as that member's model alone. So a member scores what it would alone, up to float
rounding, whatever its task does between model calls, provided its evaluation is thread-safe: state
shared across task instances (torch's global RNG, a cache being built) needs a lock, as the digits
task's classifier build has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

Result = TypeVar("Result")
# batched_forward(member indices, z, tau, d, kwargs), each stacked along a new first dim (members)
BatchedForward = Callable[[list[int], Tensor, Tensor, Tensor, dict[str, Tensor]], Tensor]


class MemberModel(nn.Module):
    """One member's evaluation model inside a pack: its weights (for the device and train/eval mode),
    with a forward that runs in the pack's batched call."""

    def __init__(self, weights: nn.Module, calls: BatchedCalls, index: int) -> None:
        super().__init__()
        self.weights = weights
        self._calls, self._index = calls, index

    def forward(self, z: Tensor, tau: Tensor, d: Tensor, **model_kwargs) -> Tensor:
        return self._calls.submit(self._index, self.weights, z, tau, d, model_kwargs)


def _signature(z: Tensor, tau: Tensor, d: Tensor, model_kwargs: dict) -> tuple | None:
    """Calls with equal signatures stack into one batched call; None: this call runs alone."""
    if any(not torch.is_tensor(value) for value in model_kwargs.values()):
        return None
    tensors = [z, tau, d, *(model_kwargs[name] for name in sorted(model_kwargs))]
    return (tuple(sorted(model_kwargs)), *((t.shape, t.dtype, t.device) for t in tensors))


class BatchedCalls:
    """Runs jobs in threads (one per member) and serves their model calls in rounds of batched calls."""

    def __init__(self, batched_forward: BatchedForward) -> None:
        self._batched_forward = batched_forward
        self._changed = threading.Condition()
        self._running: set[int] = set()
        self._waiting: dict[int, tuple] = {}  # member -> its call's (z, tau, d, kwargs)
        self._weights: dict[int, nn.Module] = {}  # member -> its own model, for calls that stack with no other
        self._answers: dict[int, Tensor | BaseException] = {}

    def submit(self, index: int, weights: nn.Module, z: Tensor, tau: Tensor, d: Tensor, model_kwargs: dict) -> Tensor:
        """From a member's thread: wait for the round that runs this call, then return its output."""
        with self._changed:
            self._weights[index] = weights
            self._waiting[index] = (z, tau, d, model_kwargs)
            self._changed.notify_all()
            self._changed.wait_for(lambda: index in self._answers)
            answer = self._answers.pop(index)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def run(self, jobs: dict[int, Callable[[], Result]]) -> dict[int, Result]:
        """Each job's result by member; the first failure (in member order) is raised once all end."""
        outcomes: dict[int, Result | BaseException] = {}

        def work(index: int, job: Callable[[], Result]) -> None:
            try:
                outcomes[index] = job()
            except BaseException as error:  # handed to the caller's thread below
                outcomes[index] = error
            finally:
                with self._changed:
                    self._running.discard(index)
                    self._changed.notify_all()

        self._running = set(jobs)
        threads = [threading.Thread(target=work, args=item, daemon=True) for item in jobs.items()]
        for thread in threads:
            thread.start()
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._running <= self._waiting.keys())
                if not self._running:
                    break
                calls, self._waiting = self._waiting, {}
            answers = self._serve(calls)
            with self._changed:
                self._answers.update(answers)
                self._changed.notify_all()
        for thread in threads:
            thread.join()
        for index in sorted(outcomes):
            if isinstance(outcomes[index], BaseException):
                raise outcomes[index]
        return outcomes

    @torch.no_grad()
    def _serve(self, calls: dict[int, tuple]) -> dict[int, Tensor | BaseException]:
        """One round: the calls grouped by signature, each group as one batched call (or alone)."""
        groups: dict[tuple, list[int]] = {}
        for index in sorted(calls):
            key = _signature(*calls[index])
            groups.setdefault(("alone", index) if key is None else key, []).append(index)
        answers: dict[int, Tensor | BaseException] = {}
        for members in groups.values():
            try:
                if len(members) == 1:
                    z, tau, d, model_kwargs = calls[members[0]]
                    answers[members[0]] = self._weights[members[0]](z, tau, d, **model_kwargs)
                    continue
                stacked = [torch.stack([calls[i][position] for i in members]) for position in range(3)]
                model_kwargs = {
                    name: torch.stack([calls[i][3][name] for i in members]) for name in calls[members[0]][3]
                }
                outputs = self._batched_forward(members, *stacked, model_kwargs)
                answers.update(zip(members, outputs.unbind(0), strict=True))
            except Exception as error:  # every member of the failed call sees the error
                answers.update(dict.fromkeys(members, error))
        return answers
