"""Stages shared by the experts of this package: the ordinary fit + test with extra Lightning callbacks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback

from nb360.methods import fit_and_test
from nb360.run import RunContext

__all__ = ["fit_and_test_with"]


def fit_and_test_with(ctx: RunContext, callbacks: Sequence[Callback]) -> dict[str, Any]:
    """:func:`~nb360.methods.fit_and_test` with ``callbacks`` added to the trainer's (the user's ``--trainer.callbacks`` stay)."""
    merged = [*(ctx.trainer_kwargs.get("callbacks") or []), *callbacks]
    return fit_and_test(dataclasses.replace(ctx, trainer_kwargs={**ctx.trainer_kwargs, "callbacks": merged}))
