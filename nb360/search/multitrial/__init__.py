"""Multi-trial NAS algorithms (NATS-Bench's random search, REA, REINFORCE, Hyperband and BOHB), without PyTorch.

Each algorithm is ``run(space, evaluator, budget_seconds, rng, **hyperparameters) -> History`` over the
protocols of :mod:`nb360.search.multitrial.base`; :mod:`nb360.search.multitrial.tabular` evaluates by lookup
in a tabular benchmark and :mod:`nb360.search.multitrial.runner` repeats searches and summarises them.
"""

from __future__ import annotations

from nb360.search.multitrial import hyperband as _hyperband
from nb360.search.multitrial import random_search, rea, reinforce
from nb360.search.multitrial.base import CodesSpace, Evaluation, Evaluator, History, Space, Trial, make_rng, product_space

__all__ = [
    "ALGORITHMS",
    "CodesSpace",
    "Evaluation",
    "Evaluator",
    "History",
    "Space",
    "Trial",
    "make_rng",
    "product_space",
]

#: name -> run function; every one takes (space, evaluator, budget_seconds, rng, **hyperparameters)
ALGORITHMS = {
    "random": random_search.run,
    "rea": rea.run,
    "reinforce": reinforce.run,
    "hyperband": _hyperband.hyperband,
    "bohb": _hyperband.bohb,
}
