"""The board farm: a pool of boards chosen by what they are, held while in use, and swept with one model.

* :mod:`rkfarm.farm.selector`: the selector syntax (``platform=rk3588,tag:camera``), shared by API and CLI;
* :mod:`rkfarm.farm.reservations`: the interface to an outside coordinator (labgrid with ``RKFARM_LABGRID``);
* :mod:`rkfarm.farm.pool`: ``DevicePool``: boards from mDNS, the inventory and ``RKFARM_AGENTS``, kept current;
  ``acquire`` / ``release`` / ``map``;
* :mod:`rkfarm.farm.sweep`: eval_perf / eval_memory of one model on many boards, and its reports.

Names are imported on first use, so ``import rkfarm.farm.selector`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Selector": "rkfarm.farm.selector",
    "SelectorError": "rkfarm.farm.selector",
    "Reservations": "rkfarm.farm.reservations",
    "ReservationError": "rkfarm.farm.reservations",
    "ReservationTimeoutError": "rkfarm.farm.reservations",
    "DevicePool": "rkfarm.farm.pool",
    "Board": "rkfarm.farm.pool",
    "JobResult": "rkfarm.farm.pool",
    "BoardRun": "rkfarm.farm.results",
    "SweepResult": "rkfarm.farm.results",
    "Sweep": "rkfarm.farm.sweep",
    "sweep": "rkfarm.farm.sweep",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rkfarm.farm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = list(_EXPORTS)
