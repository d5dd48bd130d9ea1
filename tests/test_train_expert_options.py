"""TrainModule options that expert recipes need: Ranger (RAdam inside Lookahead), multistep and delayed cosine schedules."""

from __future__ import annotations

import math

import pytest
import torch

from nb360.search.train import Lookahead, build_optimizer, build_scheduler


def _rates(schedule: str, epochs: int, **kwargs) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_scheduler(opt, schedule, epochs, **kwargs)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_delayed_cosine_matches_the_keras_callback():
    """NinaPro's CosineAnnealingScheduler(T_max=200, eta_max=1e-3, eta_min=1e-5, epoch_start=5) over 205 epochs."""
    rates = _rates("cosine", 205, min_lr=1e-5, flat_epochs=5)
    keras = [1e-3 if e < 5 else 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * (e - 5) / 200)) / 2 for e in range(205)]
    assert rates == pytest.approx(keras, rel=1e-9)


def test_multistep_matches_the_densenet_reference():
    rates = _rates("multistep", 300, milestones=[150, 225], gamma=0.1)
    reference = [1e-3 * 0.1 ** (e // 150) * 0.1 ** (e // 225) for e in range(300)]
    assert rates == pytest.approx(reference, rel=1e-9)


def test_lookahead_syncs_every_k_steps_and_round_trips_its_state():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3))
    start = w.detach().clone()
    inner_only = torch.nn.Parameter(start.clone())
    opt = build_optimizer("ranger", [w], lr=0.1, weight_decay=0.0, k=3, alpha=0.5)
    ref = torch.optim.RAdam([inner_only], lr=0.1)
    assert isinstance(opt, Lookahead)
    for step in range(3):
        for p, o in ((w, opt), (inner_only, ref)):
            o.zero_grad()
            (p**2).sum().backward()
            o.step()
        if step < 2:
            torch.testing.assert_close(w.detach(), inner_only.detach())
    torch.testing.assert_close(w.detach(), start + 0.5 * (inner_only.detach() - start))
    state = opt.state_dict()
    again = build_optimizer("ranger", [w], lr=0.1, weight_decay=0.0, k=3, alpha=0.5)
    again.load_state_dict(state)
    assert again.fast_steps == 3 and again.param_groups is again.inner.param_groups
    torch.testing.assert_close(again.state[w]["slow"], w.detach())
