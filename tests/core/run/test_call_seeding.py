"""Each plugin call starts from its own seed, whichever generators the run's device uses."""

from __future__ import annotations

import torch

from nnvis_core.run import calls


def test_a_cpu_run_seeds_the_cpu_generator_and_leaves_the_other_backends_alone(monkeypatch):
    torch.manual_seed(11)
    expected = torch.rand(3)
    seeded_everything = []
    monkeypatch.setattr(calls.torch, "manual_seed", lambda seed: seeded_everything.append(seed))
    calls.seed_call(11, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)  # the draws torch.manual_seed(11) gives
    assert seeded_everything == []


def test_a_device_run_seeds_every_generator(monkeypatch):
    seeded_everything = []
    monkeypatch.setattr(calls.torch, "manual_seed", lambda seed: seeded_everything.append(seed))
    calls.seed_call(5, "cuda")
    assert seeded_everything == [5]
