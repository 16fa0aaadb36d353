"""labgrid as the farm's coordinator: rkfarm agents exported as labgrid places, reserved by their tags.

When to use which. ``DevicePool`` always takes the agent's own exclusive hold on a board it hands out: the agent
refuses other clients' runs while it is held and the hold lapses with its lease when the holder dies. That is
all one lab needs when every host talks to the agents directly. A lab shared by many people and CI runners
across sites wants a queue in front of that: who waits for which board, in which order (priorities), visible
to everyone, for rkfarm users and for people using the same boards through labgrid for other work (flashing,
consoles, power). That is labgrid's coordinator; set ``RKFARM_LABGRID=host:port`` and the pool reserves through
it (``LabgridReservations``) before taking the agents' holds.

How an agent appears in labgrid:

* a **place** per agent, ``rkfarm-<agent id>`` by default (:meth:`LabgridReservations.sync_places`), tagged with
  the agent's attributes as ``rkfarm.farm.selector.device_tags`` encodes them (``platform``, ``agent_id``,
  ``npu_cores``, ``backend_<name>``, ``tag_<name>``) plus ``rkfarm=1``, and matching ``*/<agent id>/RKFarmAgent``;
* a **resource** of class ``RKFarmAgent`` in the group ``<agent id>``, exported by ``labgrid-exporter`` from the
  file :func:`exporter_config` writes (parameters ``agent_id``, ``address``, ``platform``). The exporter exports
  a class it does not know as a plain, available resource with its parameters: no labgrid plugin is needed.

The place's match names the agent: a reservation allocated a place, the place's ``RKFarmAgent`` match gives the
agent id exactly (tags are lossy: ``device_tags`` folds ``board-1`` and ``board_1`` together).

Reservations. ``acquire(selector, count, timeout_s)`` creates ``count`` labgrid reservations whose filter is
``selector.tags()`` plus ``rkfarm=1`` (so a lab's other places with the same tags are never handed out) and
polls them until the coordinator has allocated each a place; if time runs out it cancels them all and holds
nothing. Held reservations are refreshed by a background thread. labgrid's coordinator expires a reservation
that nobody refreshed for 60 s when it next schedules (events, or a 15 s tick): a host that dies loses its boards
by itself 60-75 s after its last refresh. labgrid frees a place only one scheduling pass after its reservation
ended, so ``release`` and a waiting ``acquire`` (every 5 s) make the coordinator schedule again (``_nudge``): a
released board goes to the next in line within a poll (1 s) instead of up to 15 s later, and a dead host's board
to a waiting host 60-65 s after the dead host's last refresh (61 s measured in tests/test_labgrid.py).

The places are deliberately not labgrid-*acquired*: an acquired place never expires (labgrid keeps it until
someone releases it, also when the holder has gone), while an allocated reservation already keeps everyone else
off the place: the coordinator allocates it to no other reservation and refuses ``labgrid-client acquire`` of it
to other users. ``release`` cancels the reservations.

Why the coordinator's gRPC API and not ``labgrid-client``: ``reserve --wait`` returns once the place is allocated
and nothing refreshes the reservation after that, so it lapses within a minute unless a process per board keeps
polling; each call starts a Python that imports labgrid (0.5-0.7 s measured here) and prints text meant for
people. labgrid's own Python client (``labgrid.remote.client.ClientSession``) is the CLI's internal asyncio
class, configured through its argparse namespace and not documented as an API. The coordinator's service
(``labgrid-coordinator.proto``; the stubs ship in ``labgrid.remote.generated``) is what labgrid's clients and
exporters of different versions speak to a coordinator, so it is the interface that stays compatible; it runs
on the grpcio rkfarm already uses. A client announces itself on a ``ClientStream`` (the coordinator keys its
sessions by connection), then calls the unary methods on the same channel.
"""

from __future__ import annotations

import getpass
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from rkfarm.farm.reservations import ReservationError, ReservationTimeoutError
from rkfarm.farm.selector import Selector, device_tags

log = logging.getLogger("rkfarm.farm.labgrid")

RESOURCE_CLASS = "RKFarmAgent"
MARKER = ("rkfarm", "1")  # every rkfarm place has this tag; every rkfarm reservation filters on it
PLACE_PREFIX = "rkfarm-"
EXPIRY_S = 60.0  # labgrid's reservation timeout after its last refresh (labgrid.remote.common.Reservation)
NUDGE_S = 5.0  # while waiting, how often to make the coordinator schedule (see LabgridReservations._nudge)
_NOWHERE = ("rkfarm_nudge", "no_such_place")  # a filter no place matches
_MANAGED = re.compile(r"(platform|agent_id|npu_cores|rkfarm|backend_.+|tag_.+)\Z")  # tags sync_places owns
_AGENT_ID = re.compile(r"[A-Za-z0-9_.:@+-]+\Z")  # no '/', '*', braces or '#': safe in matches and exporter files
_WAITING, _ALLOCATED, _ACQUIRED, _EXPIRED, _INVALID = range(5)  # labgrid.remote.common.ReservationState
_STATES = {0: "waiting", 1: "allocated", 2: "acquired", 3: "expired", 4: "invalid"}
_CHANNEL_OPTIONS = [  # labgrid's own client's keepalive settings
    ("grpc.keepalive_time_ms", 7500),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.http2.ping_timeout_ms", 10000),
    ("grpc.http2.max_pings_without_data", 0),
    # The coordinator keys a client session by its connection: two sessions in one process (two pools) must not
    # share one, as gRPC's process-wide subchannel pool would make them.
    ("grpc.use_local_subchannel_pool", 1),
]


class LabgridError(ReservationError):
    """The coordinator failed or refused a call; ``code`` is the ``grpc.StatusCode`` when it said."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def _pb() -> tuple[Any, Any]:
    try:
        from labgrid.remote.generated import labgrid_coordinator_pb2, labgrid_coordinator_pb2_grpc
    except ImportError as exc:
        raise ReservationError(f"labgrid is not installed: pip install 'rkfarm[labgrid]' ({exc})") from None
    return labgrid_coordinator_pb2, labgrid_coordinator_pb2_grpc


def client_name() -> str:
    """``host/user`` as labgrid's client names itself (``LG_HOSTNAME`` / ``LG_USERNAME`` override)."""
    host = os.environ.get("LG_HOSTNAME") or socket.gethostname()
    try:
        user = os.environ.get("LG_USERNAME") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{host}/{user}"


class _Session:
    """One client session with a labgrid coordinator: the announcing ClientStream and unary calls on one channel."""

    def __init__(self, address: str, name: str, timeout_s: float) -> None:
        self.address = address
        self.name = name
        self.timeout_s = timeout_s
        self._pb, grpc_mod = _pb()
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = grpc_mod.CoordinatorStub(self._channel)
        self._outbox: queue.Queue[Any] | None = None
        self._alive = threading.Event()
        self._closed = False
        self._start()

    def _start(self) -> None:
        outbox: queue.Queue[Any] = queue.Queue()
        synced = threading.Event()
        pb = self._pb
        startup = pb.ClientInMessage()
        startup.startup.version = _version()
        startup.startup.name = self.name
        sync = pb.ClientInMessage()
        sync.sync.id = 1
        outbox.put(startup)
        outbox.put(sync)

        def requests() -> Iterator[Any]:
            while True:
                message = outbox.get()
                if message is None:
                    return
                yield message

        stream = self._stub.ClientStream(requests())

        def read() -> None:
            try:
                for message in stream:
                    if message.HasField("sync"):
                        synced.set()
            except grpc.RpcError as exc:
                if not self._closed:
                    log.debug("labgrid coordinator %s: client stream ended: %s", self.address, exc.code())
            finally:
                self._alive.clear()
                synced.set()

        self._alive.set()
        threading.Thread(target=read, name="rkfarm-labgrid-stream", daemon=True).start()
        if not synced.wait(self.timeout_s) or not self._alive.is_set():
            outbox.put(None)
            stream.cancel()
            raise ReservationError(
                f"labgrid coordinator {self.address} did not answer within {self.timeout_s:.0f} s "
                f"(is labgrid-coordinator running there? RKFARM_LABGRID=host:port)"
            )
        self._outbox, self._stream = outbox, stream

    def call(self, method: str, request: Any) -> Any:
        """A unary call; the session is announced again first if the stream was lost (coordinator restart)."""
        with self._lock:
            if self._closed:
                raise ReservationError(f"labgrid coordinator {self.address}: session closed")
            if not self._alive.is_set():
                self._start()
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
            raise LabgridError(
                f"labgrid coordinator {self.address}: {method} failed: {details or code}", code
            ) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._outbox is not None:
                self._outbox.put(None)
        self._channel.close()


def _version() -> str:
    try:
        from rkfarm import __version__

        return f"rkfarm {__version__}"
    except ImportError:  # pragma: no cover
        return "rkfarm"


class LabgridReservations:
    """``Reservations`` through a labgrid coordinator at ``address`` (``host:port``; labgrid's default port
    20408 when none is given). ``name`` is how reservations are owned (``host/user`` by default); ``refresh_s``
    how often held reservations are refreshed (well under labgrid's 60 s expiry); ``poll_s`` how often a waiting
    acquire asks again; ``prio`` the reservations' priority (higher first, as ``labgrid-client reserve --prio``)."""

    def __init__(
        self,
        address: str,
        *,
        name: str | None = None,
        refresh_s: float = 15.0,
        poll_s: float = 1.0,
        prio: float = 0.0,
        timeout_s: float = 10.0,
    ) -> None:
        address = address.strip()
        if not address:
            raise ReservationError("labgrid: no coordinator address (RKFARM_LABGRID=host:port)")
        self.address = address if ":" in address.rsplit("]", 1)[-1] else f"{address}:20408"
        if not 0 < refresh_s < EXPIRY_S / 2:
            raise ReservationError(f"labgrid: refresh_s must be between 0 and {EXPIRY_S / 2:.0f} s, not {refresh_s}")
        self.refresh_s, self.poll_s, self.prio = refresh_s, poll_s, float(prio)
        self._session = _Session(self.address, name or client_name(), timeout_s)
        self._pb = self._session._pb
        self._held: dict[str, tuple[str, str]] = {}  # agent id -> (token, place)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.lost: list[str] = []  # agent ids whose reservation the coordinator dropped (expired, place deleted)
        self._refresher = threading.Thread(target=self._refresh_loop, name="rkfarm-labgrid-refresh", daemon=True)
        self._refresher.start()

    def __repr__(self) -> str:
        return f"LabgridReservations({self.address!r}, name={self._session.name!r})"

    def __enter__(self) -> LabgridReservations:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Reservations protocol ---------------------------------------------------------------------------
    def acquire(self, selector: Selector | str | None, count: int, timeout_s: float) -> list[str]:
        """``count`` distinct agent ids whose places match ``selector.tags()``, waiting up to ``timeout_s`` while
        others hold them; on failure nothing stays reserved."""
        selector = Selector.parse(selector)
        if count < 1:
            raise ReservationError(f"labgrid: count must be >= 1, not {count}")
        wanted = {**selector.tags(), MARKER[0]: MARKER[1]}
        pb = self._pb
        request = pb.CreateReservationRequest(filters={"main": pb.Reservation.Filter(filter=wanted)}, prio=self.prio)
        tokens: list[str] = []
        try:
            for _ in range(count):
                tokens.append(self._session.call("CreateReservation", request).reservation.token)
            log.info("labgrid: %d reservation(s) for %s: %s", count, _filter_text(wanted), ", ".join(tokens))
            places = self._wait(tokens, time.monotonic() + max(0.0, timeout_s), selector, count)
            agents = self._agents_of(places)
        except BaseException:
            self._cancel(tokens)
            raise
        with self._lock:
            for token, place, agent in zip(tokens, places, agents):
                self._held[agent] = (token, place)
        log.info("labgrid: reserved %s", ", ".join(f"{a} ({p})" for a, p in zip(agents, places)))
        return agents

    def release(self, agent_ids: Sequence[str]) -> None:
        """Cancel the reservations of these agents; ids not held here are ignored."""
        with self._lock:
            tokens = [self._held.pop(a)[0] for a in agent_ids if a in self._held]
        self._cancel(tokens)
        if tokens:
            self._nudge()

    # -- places ----------------------------------------------------------------------------------------------
    def sync_places(self, agents: Iterable[Any], *, prefix: str = PLACE_PREFIX, prune: bool = False) -> list[str]:
        """Create or update one place per agent (a ``Device``, its ``to_dict()`` or a mapping with ``agent_id``,
        ``platform``, ``npu_cores``, ``backends``, ``tags``): its tags, and the match naming the agent. Tags of a
        place that rkfarm does not manage (set by a lab's admin) are kept. ``prune`` deletes rkfarm places of
        agents not listed (unless reserved). Returns the place names, in the agents' order."""
        pb = self._pb
        existing = {p.name: p for p in self._places()}
        names: list[str] = []
        wanted_ids: set[str] = set()
        for record in agents:
            agent_id = _agent_id(record)
            wanted_ids.add(agent_id)
            name = next((p.name for p in existing.values() if _agent_of(p) == agent_id), prefix + agent_id)
            tags = {**device_tags(record), MARKER[0]: MARKER[1]}
            place = existing.get(name)
            if place is None:
                self._session.call("AddPlace", pb.AddPlaceRequest(name=name))
                old_tags: dict[str, str] = {}
                matches: list[str] = []
            else:
                old_tags = dict(place.tags)
                matches = [f"{m.exporter}/{m.group}/{m.cls}" for m in place.matches]
            stale = {k: "" for k in old_tags if _MANAGED.match(k) and k not in tags}  # "" deletes a tag
            if stale or any(old_tags.get(k) != v for k, v in tags.items()):
                self._session.call("SetPlaceTags", pb.SetPlaceTagsRequest(placename=name, tags={**stale, **tags}))
            pattern = f"*/{agent_id}/{RESOURCE_CLASS}"
            if pattern not in matches:
                self._session.call("AddPlaceMatch", pb.AddPlaceMatchRequest(placename=name, pattern=pattern))
            names.append(name)
        if prune:
            for place in existing.values():
                agent = _agent_of(place)
                if agent is not None and dict(place.tags).get(MARKER[0]) == MARKER[1] and agent not in wanted_ids:
                    if place.HasField("reservation") and place.reservation:
                        log.info(
                            "labgrid: keeping place %s of a gone agent: reserved (%s)", place.name, place.reservation
                        )
                        continue
                    self._session.call("DeletePlace", pb.DeletePlaceRequest(name=place.name))
        return names

    def places(self) -> dict[str, dict[str, Any]]:
        """rkfarm's places on the coordinator: name -> agent id, tags and the reservation holding it, if any."""
        return {
            p.name: {"agent_id": _agent_of(p), "tags": dict(p.tags), "reservation": p.reservation or None}
            for p in self._places()
            if _agent_of(p) is not None
        }

    def reservations(self) -> list[dict[str, Any]]:
        """Every reservation on the coordinator (anyone's): token, owner, state, filter, allocated place."""
        found = self._session.call("GetReservations", self._pb.GetReservationsRequest()).reservations
        return [_reservation(r) for r in found]

    def held(self) -> dict[str, str]:
        """Agent id -> reservation token, for what this object holds."""
        with self._lock:
            return {agent: token for agent, (token, _) in self._held.items()}

    def close(self) -> None:
        """Cancel what is still held and end the session."""
        self._stop.set()
        with self._lock:
            tokens = [token for token, _ in self._held.values()]
            self._held.clear()
        try:
            self._cancel(tokens)
        finally:
            self._session.close()

    # -- internals -------------------------------------------------------------------------------------------
    def _places(self) -> list[Any]:
        return list(self._session.call("GetPlaces", self._pb.GetPlacesRequest()).places)

    def _poll(self, token: str) -> Any:
        return self._session.call("PollReservation", self._pb.PollReservationRequest(token=token)).reservation

    def _wait(self, tokens: list[str], deadline: float, selector: Selector, count: int) -> list[str]:
        """The place allocated to each token, polling (which also refreshes them) until all are or time is up."""
        places: dict[str, str] = {}
        nudged = time.monotonic()
        while True:
            for token in tokens:
                if token in places:
                    continue
                res = self._poll(token)
                if res.state in (_ALLOCATED, _ACQUIRED):
                    places[token] = res.allocations["main"]
                elif res.state in (_EXPIRED, _INVALID):
                    raise ReservationError(f"labgrid: reservation {token} became {_STATES[res.state]} while waiting")
            if len(places) == len(tokens):
                return [places[t] for t in tokens]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReservationTimeoutError(
                    f"labgrid: {len(places)} of {count} board(s) matching {selector} came free within the time "
                    f"given (coordinator {self.address})"
                )
            if time.monotonic() - nudged >= NUDGE_S:
                self._nudge()  # a place an expired reservation held goes to the next one now, not a pass later
                nudged = time.monotonic()
            self._stop.wait(min(self.poll_s, remaining))

    def _agents_of(self, places: list[str]) -> list[str]:
        by_name = {p.name: p for p in self._places()}
        agents = []
        for name in places:
            place = by_name.get(name)
            agent = _agent_of(place) if place is not None else None
            if agent is None:
                raise ReservationError(
                    f"labgrid: place {name} is tagged {MARKER[0]}={MARKER[1]} but has no */<agent id>/{RESOURCE_CLASS} "
                    "match naming its agent (see rkfarm.farm.labgrid.LabgridReservations.sync_places)"
                )
            agents.append(agent)
        return agents

    def _cancel(self, tokens: Iterable[str]) -> None:
        for token in tokens:
            try:
                self._session.call("CancelReservation", self._pb.CancelReservationRequest(token=token))
            except ReservationError as exc:  # gone already (expired, coordinator restarted): nothing held
                log.debug("labgrid: cancelling %s: %s", token, exc)

    def _nudge(self) -> None:
        """Make the coordinator schedule again now. labgrid frees a place whose reservation was cancelled or expired
        at the end of a scheduling pass, so the next reservation gets it only at the next pass: the next event or
        the coordinator's 15 s tick. Creating (and at once cancelling) a reservation no place matches is an event."""
        pb = self._pb
        request = pb.CreateReservationRequest(filters={"main": pb.Reservation.Filter(filter=dict([_NOWHERE]))})
        try:
            token = self._session.call("CreateReservation", request).reservation.token
            self._cancel([token])
        except ReservationError as exc:
            log.debug("labgrid: nudging the scheduler: %s", exc)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            with self._lock:
                held = list(self._held.items())
            for agent, (token, place) in held:
                try:
                    res = self._poll(token)
                except ReservationError as exc:
                    gone = getattr(exc, "code", None) is grpc.StatusCode.FAILED_PRECONDITION  # "does not exist"
                    if gone:  # expired (its holder stalled past 60 s) or cancelled by an admin
                        self._lose(agent, token, f"the coordinator no longer has it ({exc})")
                    else:
                        log.warning("labgrid: refreshing the reservation of %s: %s", agent, exc)
                    continue
                if res.state not in (_ALLOCATED, _ACQUIRED) or res.allocations.get("main") != place:
                    self._lose(agent, token, f"it is {_STATES.get(res.state, res.state)}")

    def _lose(self, agent: str, token: str, why: str) -> None:
        with self._lock:
            if self._held.get(agent, ("",))[0] != token:
                return
            del self._held[agent]
            self.lost.append(agent)
        log.warning("labgrid: lost the reservation of %s (%s): %s", agent, token, why)


def exporter_config(agents: Iterable[Any]) -> str:
    """The ``labgrid-exporter`` resource file exporting these agents (``Device`` records or mappings with
    ``agent_id`` and ``address``): one group per agent id holding an ``RKFarmAgent`` resource."""
    import yaml

    groups: dict[str, Any] = {}
    for record in agents:
        fields = _fields(record)
        agent_id = _agent_id(record)
        groups[agent_id] = {
            RESOURCE_CLASS: {
                "agent_id": agent_id,
                "address": str(fields.get("address", "")),
                "platform": str(fields.get("platform", "")),
            }
        }
    body = yaml.safe_dump(groups, sort_keys=True, default_flow_style=False)
    # labgrid renders the file with Jinja2 first ('#' starts a statement there, '##' a comment)
    return "## rkfarm agents as labgrid resources (rkfarm.farm.labgrid.exporter_config)\n" + body


def _agent_id(record: Any) -> str:
    agent_id = str(_fields(record).get("agent_id", ""))
    if not _AGENT_ID.match(agent_id):
        raise ReservationError(
            f"labgrid: agent id {agent_id!r} cannot name a labgrid resource (letters, digits and _ . : @ + - only)"
        )
    return agent_id


def _agent_of(place: Any) -> str | None:
    """The agent a place's match names (``*/<agent id>/RKFarmAgent``), or None for another kind of place."""
    for match in place.matches:
        if match.cls == RESOURCE_CLASS and _AGENT_ID.match(match.group or ""):
            return str(match.group)
    return None


def _reservation(res: Any) -> dict[str, Any]:
    return {
        "token": res.token,
        "owner": res.owner,
        "state": _STATES.get(res.state, str(res.state)),
        "prio": res.prio,
        "filter": dict(res.filters["main"].filter) if "main" in res.filters else {},
        "place": res.allocations.get("main"),
        "timeout": res.timeout,
    }


def _filter_text(tags: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items()))


def _fields(record: Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    to_dict = getattr(record, "to_dict", None)
    fields: Mapping[str, Any] = to_dict() if callable(to_dict) else vars(record)
    return fields
