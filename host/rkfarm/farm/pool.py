"""``DevicePool``: the boards of a farm, chosen by what they are, handed out one holder at a time.

Boards come from the process's mDNS registry (``rkfarm.remote.registry``: kept current, a crashed board leaves
within ``STALE_S``), ``RKFARM_AGENTS`` and the inventory file (asked again every ``INVENTORY_REFRESH_S``).
``pool.boards('platform=rk3588,tag:camera')`` is what matches now (see ``rkfarm.farm.selector``).

``pool.acquire(selector, count, timeout_s)`` hands out boards under the agents' own exclusive holds
(``rkfarm_agent.holds``): while a pool holds a board, every other client's runs there are refused, so two pools
— in one process or on two hosts — never both get it, and timings are not shared with anyone's load. The pool
renews its holds; a process that dies stops renewing, and its boards come free after the hold lease (15 s).
With ``RKFARM_LABGRID=host:port`` (or ``reservations=``) the boards are reserved through that coordinator first.

``pool.map(job, boards)`` runs ``job(board)`` on many boards at once (bounded threads); every board's outcome is
collected in a ``JobResult``, one failure never stops the others, and a board that vanishes mid-job is reported
as such and, with ``retry_elsewhere=True``, its job run again on another matching board.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import grpc

from rkfarm.errors import AgentUnavailableError, RemoteError, SessionLostError
from rkfarm.farm.reservations import ReservationError, Reservations, ReservationTimeoutError, reservations_from_env
from rkfarm.farm.selector import Selector
from rkfarm.remote.client import AgentClient, default_timeout_s
from rkfarm.remote.discovery import Device, inventory_addresses, probe
from rkfarm.remote.retry import Backoff
from rkfarm_proto.transport import REFUSED_HELD

if TYPE_CHECKING:
    from rkfarm.remote.registry import Registry
    from rkfarm.remote.runtime import RemoteRuntime
    from rkfarm_proto.package import ModelPackage
    from rkfarm_proto.records import LoadOptions

log = logging.getLogger(__name__)
T = TypeVar("T")

HOLD_LEASE_S = 15.0  # the agents' hold lease the pool asks for; renewed every third of it
INVENTORY_REFRESH_S = 10.0
MAX_WORKERS = 32  # map()'s default bound on threads (boards are I/O for the host: threads wait on gRPC)
VANISHED = (AgentUnavailableError, SessionLostError)


def _client_name(label: str) -> str:
    from rkfarm.remote.runtime import client_name

    return f"{client_name()} ({label})" if label else client_name()


class Board:
    """A board this pool holds: its ``device`` and the agent's hold. ``open()`` a package on it; ``release()``
    (or the pool's) gives it back."""

    def __init__(self, pool: DevicePool, device: Device, hold_id: str, lease_s: float) -> None:
        self.pool = pool
        self.device = device
        self.hold_id = hold_id
        self.lease_s = lease_s
        self.renewed = time.monotonic()
        self.lost = ""  # why the hold was lost (the agent vanished, or the hold lapsed), if it was

    @property
    def agent_id(self) -> str:
        return self.device.agent_id

    def client(self, timeout_s: float | None = None) -> AgentClient:
        """A client whose calls run under this board's hold (close it, or use it as a context manager)."""
        client = AgentClient(self.device.address, timeout_s=timeout_s or self.pool.timeout_s)
        client.use_hold(self.hold_id)
        return client

    def open(
        self, package: ModelPackage, options: LoadOptions | None = None, *, timeout_s: float | None = None
    ) -> RemoteRuntime:
        """``package`` opened on this board under the pool's hold (upload if the agent lacks it)."""
        from rkfarm.remote.runtime import RemoteRuntime
        from rkfarm_proto.records import LoadOptions

        return RemoteRuntime(
            package, self.device, options or LoadOptions(), timeout_s=timeout_s or self.pool.timeout_s,
            hold_id=self.hold_id, reconnect_s=self.pool.reconnect_s,
        )  # fmt: skip

    def release(self) -> None:
        self.pool.release([self])

    def __repr__(self) -> str:
        return f"Board({self.agent_id} @ {self.device.address})"


@dataclass
class JobResult(Generic[T]):
    """What became of one board's job: its value, or its error (``vanished``: the board left mid-job)."""

    agent_id: str
    value: T | None = None
    error: str = ""
    vanished: bool = False
    attempts: list[str] = field(default_factory=list)  # the boards tried, in order
    elapsed_s: float = 0.0
    replaced: str = ""  # the failure of the board this job ran on before (retry_elsewhere)

    @property
    def ok(self) -> bool:
        return not self.error


class DevicePool:
    """The farm's boards (see the module docstring). ``selector`` narrows every call's default; ``label`` is
    shown to other clients as this pool's holder name (with user@host)."""

    def __init__(
        self,
        selector: str | Selector | None = None,
        *,
        registry: Registry | None = None,
        inventory: bool = True,
        reservations: Reservations | None = None,
        label: str = "",
        hold_lease_s: float = HOLD_LEASE_S,
        timeout_s: float | None = None,
        reconnect_s: float = 10.0,
        max_workers: int = MAX_WORKERS,
    ) -> None:
        from rkfarm.remote.registry import shared_registry

        self.selector = Selector.parse(selector)
        self.registry = registry or shared_registry()
        self._own_reservations = reservations is None  # made here from RKFARM_LABGRID: closed with the pool
        self.reservations = reservations if reservations is not None else reservations_from_env()
        self.client_name = _client_name(label)
        self.hold_lease_s = hold_lease_s
        self.timeout_s = default_timeout_s(timeout_s)
        self.reconnect_s = reconnect_s
        self.max_workers = max_workers
        self._use_inventory = inventory
        self._inventory: dict[str, Device] = {}
        self._inventory_at = -1e9
        self._lock = threading.Lock()
        self._held: dict[str, Board] = {}  # agent id -> board this pool holds
        self._closed = threading.Event()
        self._gone: dict[str, str] = {}  # agent id -> why it left, for jobs running there
        self._unsubscribe = self.registry.subscribe(self._on_registry)
        self._keeper = threading.Thread(target=self._keep_holds, name="rkfarm-pool-holds", daemon=True)
        self._keeper.start()

    # -- what there is -----------------------------------------------------------------------------------
    def boards(self, selector: str | Selector | None = None, *, settle_s: float = 2.0) -> list[Device]:
        """The boards matching ``selector`` (and the pool's own) now, sorted by id; ids several agents claim are
        left out (``conflicts()`` lists them). The first call waits for discovery to settle (``settle_s``)."""
        self.registry.settle(settle_s)
        wanted = Selector.parse(selector)
        found = {d.agent_id: d for d in self._inventory_devices()}
        mdns = self.registry.devices()
        for device in mdns:
            found.pop(device.agent_id, None)  # mDNS wins ties (it is current)
        unique = [d for d in mdns if not d.conflict]
        return sorted(
            (d for d in [*found.values(), *unique] if self.selector.matches(d) and wanted.matches(d)),
            key=lambda d: d.agent_id,
        )

    def conflicts(self) -> dict[str, list[Device]]:
        """Ids that more than one agent claims (each is refused until one of them changes its id)."""
        groups: dict[str, list[Device]] = {}
        for device in self.registry.devices():
            if device.conflict:
                groups.setdefault(device.agent_id, []).append(device)
        return groups

    def wait_for(self, selector: str | Selector | None, count: int, timeout_s: float) -> list[Device]:
        """At least ``count`` matching boards (all that match), waiting up to ``timeout_s`` for them to join."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.boards(selector, settle_s=max(0.0, deadline - time.monotonic()))
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)

    def _inventory_devices(self) -> list[Device]:
        if not self._use_inventory:
            return []
        now = time.monotonic()
        with self._lock:
            fresh = now - self._inventory_at < INVENTORY_REFRESH_S
            if not fresh:
                self._inventory_at = now
        if not fresh:
            addresses = inventory_addresses()
            if addresses:
                with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as executor:
                    probed = list(executor.map(self._probe_quietly, addresses))
                with self._lock:
                    self._inventory = {d.agent_id: d for d in probed if d is not None}
        with self._lock:
            return list(self._inventory.values())

    @staticmethod
    def _probe_quietly(address: str) -> Device | None:
        try:
            return probe(address, 3.0, source="inventory")
        except RemoteError as exc:
            log.info("inventory agent %s: %s", address, exc)
            return None

    def _on_registry(self, event: str, device: Device) -> None:
        if event == "left":
            with self._lock:
                if device.agent_id in self._held:
                    self._gone[device.agent_id] = f"board {device.agent_id} at {device.address} left the pool"
        elif event == "joined":
            with self._lock:
                self._gone.pop(device.agent_id, None)

    # -- holding -----------------------------------------------------------------------------------------
    def acquire(
        self, selector: str | Selector | None = None, count: int = 1, timeout_s: float = 30.0, *,
        exclude: Iterable[str] = (),
    ) -> list[Board]:  # fmt: skip
        """``count`` matching boards held by this pool, waiting up to ``timeout_s`` while others hold them;
        ReservationTimeoutError (holding nothing) if they did not come free."""
        wanted = Selector.parse(selector)
        if count < 1:
            raise ReservationError(f"acquire: count must be at least 1, not {count}")
        deadline = time.monotonic() + max(0.0, timeout_s)
        if self.reservations is not None:
            return self._acquire_reserved(wanted, count, deadline)
        skip = set(exclude)
        pauses = Backoff(0.1, 1.5, 1.0).pauses()
        last: list[str] = []
        while True:
            with self._lock:
                mine = set(self._held)
            candidates = [d for d in self.boards(wanted) if d.agent_id not in mine | skip]
            candidates.sort(key=lambda d: (bool(d.holder), d.sessions or 0, d.load or 0.0, random.random()))
            got, last = self._hold_some(candidates, count)
            if len(got) == count:
                return got
            self.release(got)  # all or nothing: two pools each holding half would wait for each other
            left = deadline - time.monotonic()
            if left <= 0:
                matched = len(candidates)
                raise ReservationTimeoutError(
                    f"acquire: {count} board(s) matching {wanted} (and {self.selector}) not free within "
                    f"{timeout_s:g} s: {matched} match, {len(got)} could be held"
                    + (f" ({'; '.join(last[:3])})" if last else "")
                )
            time.sleep(min(left, next(pauses) * (0.5 + random.random())))

    def _hold_some(self, candidates: Sequence[Device], count: int) -> tuple[list[Board], list[str]]:
        """Try to hold boards from ``candidates`` (a few at a time) until ``count`` are held."""
        got: list[Board] = []
        refusals: list[str] = []
        queue = list(candidates)
        with ThreadPoolExecutor(max_workers=min(16, max(1, count))) as executor:
            while queue and len(got) < count:
                batch, queue = queue[: count - len(got)], queue[count - len(got) :]
                for device, outcome in zip(batch, executor.map(self._try_hold, batch)):
                    if isinstance(outcome, Board):
                        got.append(outcome)
                    else:
                        refusals.append(f"{device.agent_id}: {_why(outcome)}")
        return got, refusals

    def _try_hold(self, device: Device, wait_s: float = 0.0) -> Board | RemoteError:
        """The board held by this pool, or the agent's refusal (``refused == REFUSED_HELD``: someone holds it)."""
        try:
            with AgentClient(device.address, timeout_s=min(self.timeout_s, 5.0)) as client:
                response = client.hold(self.hold_lease_s, self.client_name, wait_s)
        except RemoteError as exc:
            return exc
        board = Board(self, device, response.hold_id, response.lease_s)
        with self._lock:
            self._held[device.agent_id] = board
            self._gone.pop(device.agent_id, None)
        log.info("holding %s @ %s", device.agent_id, device.address)
        return board

    def _acquire_reserved(self, wanted: Selector, count: int, deadline: float) -> list[Board]:
        assert self.reservations is not None
        while True:
            ids = self.reservations.acquire(wanted, count, max(0.0, deadline - time.monotonic()))
            known = {d.agent_id: d for d in self.boards(settle_s=max(0.0, deadline - time.monotonic()))}
            fit = [known[i] for i in ids if i in known and wanted.matches(known[i])]
            if len(fit) == len(ids):
                boards = [self._try_hold(d, max(0.0, deadline - time.monotonic())) for d in fit]
                held = [b for b in boards if isinstance(b, Board)]
                if len(held) == count:
                    return held
                self.release(held)
                self.reservations.release(ids)
                problems = [_why(b) for b in boards if not isinstance(b, Board)]
                raise ReservationError(f"reserved {', '.join(ids)} but the agents refused a hold: {problems[0]}")
            self.reservations.release(ids)
            missing = [i for i in ids if i not in known]
            if time.monotonic() >= deadline:
                raise ReservationTimeoutError(
                    f"the coordinator reserved {', '.join(ids)}, but "
                    + (f"{', '.join(missing)} answer(s) no discovery" if missing else f"not all match {wanted}")
                )
            time.sleep(0.5)

    def release(self, boards: Iterable[Board | str]) -> None:
        """Give boards (or agent ids) back: the agents' holds end now, and the coordinator's reservation."""
        ids = [b.agent_id if isinstance(b, Board) else b for b in boards]
        with self._lock:
            released = [self._held.pop(i) for i in ids if i in self._held]
        for board in released:
            try:
                with AgentClient(board.device.address, timeout_s=min(self.timeout_s, 5.0)) as client:
                    client.release(board.hold_id)
            except RemoteError as exc:  # a board that is gone has no hold to end; its lease lapses anyway
                log.info("release %s: %s", board.agent_id, exc)
        if released and self.reservations is not None:
            self.reservations.release([b.agent_id for b in released])

    def held(self) -> list[Board]:
        with self._lock:
            return list(self._held.values())

    def _keep_holds(self) -> None:
        while not self._closed.wait(max(0.5, self.hold_lease_s / 3)):
            for board in self.held():
                try:
                    with AgentClient(board.device.address, timeout_s=min(self.timeout_s, 5.0)) as client:
                        client.hold(hold_id=board.hold_id)
                    board.renewed = time.monotonic()
                except RemoteError as exc:
                    board.lost = f"hold on {board.agent_id} could not be renewed: {exc}"
                    log.warning("%s", board.lost)

    # -- running -----------------------------------------------------------------------------------------
    def map(
        self,
        job: Callable[[Board], T],
        boards: Sequence[Board | Device] | str | Selector | None = None,
        *,
        retry_elsewhere: bool = False,
        acquire_timeout_s: float = 30.0,
        max_workers: int | None = None,
        on_result: Callable[[JobResult[T], int, int], None] | None = None,
        follow: bool = False,
    ) -> list[JobResult[T]]:
        """``job(board)`` on every board (held ones as they are; devices, or a selector's matches, are acquired
        for their job and released after it), at most ``max_workers`` at once. Never raises for a board's
        failure: each board's ``JobResult`` says what happened. ``retry_elsewhere``: a job whose board vanished
        runs again on another matching board not tried yet. ``follow`` (with a selector): boards that join
        while the jobs run get one too. ``on_result(result, done, total)`` is called as each finishes."""
        wanted = None if isinstance(boards, Sequence) and not isinstance(boards, str) else Selector.parse(boards)
        targets: list[Board | Device] = list(boards) if wanted is None else list(self.boards(wanted))  # type: ignore[arg-type]
        tried: set[str] = set()
        results: list[JobResult[T]] = []
        workers = max(1, min(max_workers or self.max_workers, max(1, len(targets))))
        total = len(targets)
        if follow:
            workers = max(1, min(max_workers or self.max_workers, max(workers, len(targets) + 4)))
        with ThreadPoolExecutor(max_workers=workers) as executor:
            running: dict[Future[JobResult[T]], Board | Device] = {}
            for target in targets:
                tried.add(target.agent_id)
                running[executor.submit(self._run_one, job, target, acquire_timeout_s)] = target
            while running:
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    target = running.pop(future)
                    result = future.result()
                    if result.vanished and retry_elsewhere:
                        spare = self._spare(wanted, target, tried)
                        if spare is not None:
                            tried.add(spare.agent_id)
                            log.warning("%s; running its job on %s", result.error, spare.agent_id)
                            retry = executor.submit(self._run_one, job, spare, acquire_timeout_s, result)
                            running[retry] = spare
                            continue
                    results.append(result)
                    if on_result is not None:
                        on_result(result, len(results), total)
                if follow and wanted is not None and running:
                    for device in self.boards(wanted, settle_s=0.0):
                        if device.agent_id not in tried:
                            tried.add(device.agent_id)
                            total += 1
                            log.info("%s joined: it gets a job too", device.agent_id)
                            running[executor.submit(self._run_one, job, device, acquire_timeout_s)] = device
        return results

    def _spare(self, wanted: Selector | None, lost: Board | Device, tried: set[str]) -> Device | None:
        """Another board for a job whose board vanished: one matching what was asked (or the lost board's
        platform), not tried yet."""
        like = wanted if wanted is not None else Selector.parse(f"platform={_device(lost).platform}")
        spares = [d for d in self.boards(like, settle_s=0.0) if d.agent_id not in tried and not d.holder]
        return spares[0] if spares else None

    def _run_one(
        self, job: Callable[[Board], T], target: Board | Device, acquire_timeout_s: float,
        earlier: JobResult[T] | None = None,
    ) -> JobResult[T]:  # fmt: skip
        started = time.monotonic()
        result: JobResult[T] = JobResult(
            target.agent_id,
            attempts=[*(earlier.attempts if earlier else [])],
            replaced=f"{earlier.agent_id}: {earlier.error}" if earlier else "",
        )
        result.attempts.append(target.agent_id)
        own = not isinstance(target, Board)
        board: Board | None = None
        try:
            board = target if isinstance(target, Board) else self._hold_for_job(target, acquire_timeout_s)
            result.value = job(board)
        except Exception as exc:
            result.error = _one_line(exc)
            with self._lock:
                gone = self._gone.get(target.agent_id)
            result.vanished = isinstance(exc, VANISHED) or gone is not None
            if gone:
                result.error = f"{gone} during the job: {result.error}"
        finally:
            if own and board is not None:
                with contextlib.suppress(Exception):
                    self.release([board])
        result.elapsed_s = time.monotonic() - started
        return result

    def _hold_for_job(self, device: Device, timeout_s: float) -> Board:
        deadline = time.monotonic() + timeout_s
        pauses = Backoff(0.1, 1.5, 1.0).pauses()
        while True:
            outcome = self._try_hold(device)
            if isinstance(outcome, Board):
                return outcome
            if outcome.refused != REFUSED_HELD:
                raise outcome  # unreachable, refusing us: the job fails with the agent's own error
            if time.monotonic() >= deadline:
                raise ReservationTimeoutError(f"{device.agent_id}: still held by someone else after {timeout_s:g} s")
            time.sleep(min(max(0.0, deadline - time.monotonic()), next(pauses)))

    # -- the end -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every board still held and stop renewing."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._unsubscribe()
        self.release(self.held())
        close = getattr(self.reservations, "close", None)
        if self._own_reservations and callable(close):
            close()

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _device(target: Board | Device) -> Device:
    return target.device if isinstance(target, Board) else target


def _why(refusal: RemoteError) -> str:
    if refusal.refused == REFUSED_HELD:
        return "held by someone else"
    if refusal.code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{refusal} (this rkfarm-agent predates exclusive holds: upgrade it)"
    return str(refusal)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, RemoteError) else f"{type(exc).__name__}: {text}"


__all__ = ["Board", "DevicePool", "JobResult"]
