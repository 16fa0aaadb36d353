"""Reservations: who may use which boards, decided by a coordinator outside this process.

``DevicePool`` always takes an agent's own exclusive hold on every board it hands out (the agent refuses other
clients' runs while it is held, and the hold lapses with its lease when the holder dies; see
``rkfarm_agent.holds``). That is enough for one lab whose hosts all speak to the agents directly.

A lab shared by many people and CI runners across sites already has a farm engine; ``Reservations`` is how the
pool asks it first. The pool calls ``acquire`` for the boards a selector matches and gets agent ids back (it
waits, up to ``timeout_s``, while others hold them), then takes the agents' holds on those ids; ``release``
hands them back. With ``RKFARM_LABGRID=host:port`` set, the pool uses labgrid's coordinator
(:class:`rkfarm.farm.labgrid.LabgridReservations`, imported only then).

The contract an implementation keeps:

* ``acquire(selector, count, timeout_s)`` returns exactly ``count`` distinct agent ids whose boards match
  ``selector.tags()`` (the pool checks the rest of the selector with ``selector.matches`` and releases what does
  not fit), or raises :class:`ReservationError` (``ReservationTimeoutError`` when the time ran out) holding nothing;
* two callers never hold the same id at once; a holder that disappears without ``release`` loses its ids after a
  bounded time (the coordinator's reservation expiry);
* ``release(ids)`` is idempotent: ids not held (released, expired) are ignored.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rkfarm.errors import RkfarmError

if TYPE_CHECKING:
    from rkfarm.farm.selector import Selector

LABGRID_ENV = "RKFARM_LABGRID"


class ReservationError(RkfarmError):
    """A coordinator refused or failed a reservation; the message says why."""


class ReservationTimeoutError(ReservationError):
    """Not enough matching boards came free within the time given."""


@runtime_checkable
class Reservations(Protocol):
    """A coordinator the pool reserves boards through (see the module docstring for the contract)."""

    def acquire(self, selector: Selector, count: int, timeout_s: float) -> list[str]:
        """``count`` agent ids reserved for this caller, matching ``selector.tags()``."""
        ...

    def release(self, agent_ids: Sequence[str]) -> None:
        """Hand the ids back (ignoring ids not held)."""
        ...


def reservations_from_env() -> Reservations | None:
    """The coordinator ``RKFARM_LABGRID=host:port`` names (labgrid), or None when it is not set."""
    address = os.environ.get(LABGRID_ENV, "").strip()
    if not address:
        return None
    try:
        module = importlib.import_module("rkfarm.farm.labgrid")
    except ImportError as exc:
        raise ReservationError(
            f"{LABGRID_ENV}={address} needs rkfarm's labgrid support: pip install 'rkfarm[labgrid]' ({exc})"
        ) from None
    reservations: Reservations = module.LabgridReservations(address)
    return reservations


__all__ = ["LABGRID_ENV", "ReservationError", "ReservationTimeoutError", "Reservations", "reservations_from_env"]
