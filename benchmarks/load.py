"""Agent throughput under load on loopback: many clients at once against one client, in the same run.

  python benchmarks/load.py [--quick] [--json] [--repeat 3] [--clients 32,64,128] [--per-client 50] [--procs 1]
                            [--auth none,token+mtls] [--core-mask 0] [--agent-args '...']

For each auth mode, one agent on 127.0.0.1 runs the PP-OCR text-direction classifier (float16 package):

baseline   one client, inferences one after another on the lock-step stream RKNN uses (what a single script
           sees): inferences/s and latency p50/p99
load       for each --clients count, that many clients at once (each its own RemoteRuntime, like separate RKNN
           objects), --per-client inferences each, spread over --procs host processes: total inferences/s,
           latency p50/p99/max, every answer compared with the simulator's

Each load round's clients open their sessions all together, the way init_runtime does (probe the address,
upload unless stored, Load): how long that took (p50 / max), and the refusals by reason (a Load the agent refused,
by the limit it named; a stream refused for want of slots, after which that client makes unary calls). The
agent's RSS is taken before the round, at its peak (sampled every 50 ms) and 5 s after the last session closed.

Sessions are opened and warmed before the clock starts; the agent keeps its default run slots (2 x CPUs) and
stream slots (64); its session limits are set to the largest --clients count + 8.
With --repeat, baseline and load alternate and each figure is the median over the repeats (a shared machine
is noisy); the per-repeat values are in the --json output.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, p

os.environ.setdefault("RKFARM_MDNS_INTERFACES", "127.0.0.1")

from rkfarm import RKNN
from rkfarm.errors import RemoteError
from rkfarm.remote.credentials import Credentials
from rkfarm.remote.local import LocalAgent
from rkfarm.remote.runtime import RemoteRuntime
from rkfarm.samples import text_lines
from rkfarm.targets import open_agent
from rkfarm.zoo import packaged_model
from rkfarm_agent.certs import make_lab_pki
from rkfarm_proto.package import read_package
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.transport import REFUSED_STREAMS

IMAGES = 16
SETTLE_S = 5.0  # RSS "after": this long after the last session closed (the agent trims its heap meanwhile)


def build_cls(out: Path) -> Path:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
        rknn.load_onnx(str(packaged_model("ppocr-cls").path()), input_size_list=[[1, 3, 48, 192]])
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


def expected_outputs(pkg: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(pkg))
        sim.init_runtime()
        return [sim.inference([img])[0] for img in images]  # type: ignore[index]


def secure_setup(work: Path, auth: str) -> tuple[list[str], dict[str, str]]:
    """Agent arguments and host environment for an auth mode (a fresh token and lab PKI)."""
    if auth == "none":
        return [], {}
    work.mkdir(parents=True, exist_ok=True)
    token = work / "token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    pki = make_lab_pki(work / "pki", "bench", clients=["host"])
    assert pki.agent_cert and pki.agent_key
    args, env = ["--token-file", str(token)], {"RKFARM_TOKEN_FILE": str(token)}
    if "tls" in auth:
        args += ["--tls-cert", str(pki.agent_cert), "--tls-key", str(pki.agent_key)]
        env["RKFARM_TLS_CA"] = str(pki.ca_cert)
    if "mtls" in auth:
        args += ["--tls-client-ca", str(pki.ca_cert)]
        cert, key = pki.clients["host"]
        env.update(RKFARM_TLS_CERT=str(cert), RKFARM_TLS_KEY=str(key))
    return args, env


def refusal_reason(exc: RemoteError) -> str:
    """For the report: the limit that refused (its kind, else the option its message names), else the code."""
    named = re.search(r"--[a-z][a-z-]+", str(exc))
    return str(exc.refused or exc.kind or (named.group(0) if named else "") or getattr(exc.code, "name", "error"))


class StreamRefusals(logging.Handler):
    """Counts the host's notes that the agent refused a stream (the client then makes unary calls)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "no stream slot free" in record.getMessage():
            self.count += 1


def client_process(
    address: str,
    pkg: str,
    clients: int,
    per_client: int,
    first: int,
    env: dict[str, str],
    core_mask: int,
    barrier: Any,
    out: Any,
) -> None:
    """``clients`` runtimes opened at once, as init_runtime opens them; waits at the barrier, then runs in
    threads; sends latencies, checks, opening times and refusals."""
    os.environ.update(env)
    streams = StreamRefusals()
    stream_log = logging.getLogger("rkfarm.remote.stream")
    stream_log.addHandler(streams)
    stream_log.setLevel(logging.INFO)
    package = read_package(Path(pkg))
    images = [line.image for line in text_lines(IMAGES, seed=11)]
    expected = expected_outputs(Path(pkg), images)
    refusals: Counter[str] = Counter()

    def open_one(_: int) -> tuple[RemoteRuntime | None, float]:
        t0 = time.perf_counter()
        try:
            runtime = open_agent(package, "rk3588", address, LoadOptions(core_mask=core_mask))
        except RemoteError as exc:
            refusals[refusal_reason(exc)] += 1
            return None, time.perf_counter() - t0
        assert isinstance(runtime, RemoteRuntime)
        return runtime, time.perf_counter() - t0

    with ThreadPoolExecutor(clients) as pool:
        opened = list(pool.map(open_one, range(clients)))
    runtimes = [rt for rt, _ in opened if rt is not None]
    open_s = [t for _, t in opened]
    for rt in runtimes:
        for img in images[:3]:
            rt.inference([img])  # warm: stream open, first runs done
    latencies: list[float] = []
    wrong = 0
    lock = threading.Lock()

    def run(index: int, rt: RemoteRuntime) -> None:
        nonlocal wrong
        mine = []
        bad = 0
        for i in range(per_client):
            k = (first + index + i) % IMAGES
            t0 = time.perf_counter()
            got = rt.inference([images[k]])
            mine.append(time.perf_counter() - t0)
            bad += not np.allclose(got[0], expected[k], rtol=0, atol=1e-6)
        with lock:
            latencies.extend(mine)
            wrong += bad

    threads = [threading.Thread(target=run, args=(i, rt)) for i, rt in enumerate(runtimes)]
    barrier.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished = time.perf_counter()
    if streams.count:
        refusals[REFUSED_STREAMS] += streams.count
    out.put((latencies, wrong, finished, open_s, dict(refusals)))
    for rt in runtimes:
        rt.close()


class RssSampler:
    """An agent's RSS in MB: now, and the largest seen every 50 ms while sampling."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self.peak_mb = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def now(self) -> float:
        return float(self._proc.memory_info().rss) / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.peak_mb


def run_load(
    agent: LocalAgent,
    pkg: Path,
    clients: int,
    per_client: int,
    procs: int,
    env: dict[str, str],
    core_mask: int = 0,
    memory: bool = False,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    workers = [
        ctx.Process(
            target=client_process,
            args=(agent.address, str(pkg), n, per_client, sum(shares[:i]), env, core_mask, barrier, out),
        )
        for i, n in enumerate(shares)
    ]
    assert agent.proc is not None
    rss = RssSampler(agent.proc.pid)
    before_mb = rss.now()
    for w in workers:
        w.start()
    barrier.wait(timeout=300)  # everyone has opened and warmed its sessions
    started = time.perf_counter()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(60)
    peak_mb = rss.stop()
    with agent.client(timeout_s=30) as client:  # the workers closed their runtimes before exiting
        while client.list_sessions():
            time.sleep(0.05)
    settled = time.monotonic() + SETTLE_S
    while time.monotonic() < settled:
        time.sleep(0.25)
    after_mb = rss.now()
    latencies = [x for r in results for x in r[0]]
    open_s = [x for r in results for x in r[3]]
    refusals: Counter[str] = Counter()
    for r in results:
        refusals.update(r[4])
    elapsed = max(r[2] for r in results) - started
    figures: dict[str, Any] = {
        "clients": clients,
        "served": clients - sum(n for reason, n in refusals.items() if reason != REFUSED_STREAMS),
        "inferences": len(latencies),
        "wrong": sum(r[1] for r in results),
        "inferences_per_s": len(latencies) / elapsed,
        "p50_ms": median(latencies) * 1e3,
        "p99_ms": p(latencies, 99) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "open_p50_s": median(open_s),
        "open_max_s": max(open_s),
        "refusals": dict(sorted(refusals.items())),
    }
    if memory:
        figures.update(rss_before_mb=before_mb, rss_peak_mb=peak_mb, rss_after_mb=after_mb)
    return figures


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the repeats; wrong answers are summed (any one is a failure), refusals are the
    median count per reason."""
    out = {k: median([r[k] for r in runs]) if isinstance(runs[0][k], float) else runs[0][k] for k in runs[0]}
    out["wrong"] = sum(r["wrong"] for r in runs)
    reasons = sorted({reason for r in runs for reason in r["refusals"]})
    out["refusals"] = {reason: median([r["refusals"].get(reason, 0) for r in runs]) for reason in reasons}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer inferences")
    parser.add_argument("--repeat", type=int, default=1, help="alternate baseline and load this many times")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients", default="32,64,128", help="comma-separated client counts, one round each")
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--procs", type=int, default=1, help="host processes the clients are spread over")
    parser.add_argument("--auth", default="none", help="comma-separated: none, token, token+tls, token+mtls")
    parser.add_argument("--core-mask", type=int, default=0, help="init_runtime core_mask (0 = auto; 1 = one thread)")
    parser.add_argument(
        "--agent-args", default="", help="extra rkfarm-agent serve options, e.g. '--max-concurrent-runs 2'"
    )
    args = parser.parse_args()
    per_client = 10 if args.quick else args.per_client
    counts = [int(c) for c in args.clients.split(",")]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rkfarm-load-") as tmp:
        work = Path(tmp)
        pkg = build_cls(work / "cls.rkfm")
        for auth in args.auth.split(","):
            agent_args, env = secure_setup(work / auth, auth)
            room = str(max(counts) + 8)
            limits = ["--max-sessions", room, "--max-sessions-per-client", room, "--max-streams-per-client", room]
            agent = LocalAgent(
                work / auth / "store", f"load-{auth}", *limits, *agent_args, *args.agent_args.split(),
                advertise=False, credentials=Credentials.load(env=env),
            )  # fmt: skip
            singles: list[dict[str, Any]] = []
            loads: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
            with agent:
                for _ in range(args.repeat):
                    singles.append(run_load(agent, pkg, 1, per_client * 8, 1, env, args.core_mask))
                    for n in counts:
                        loads[n].append(run_load(agent, pkg, n, per_client, args.procs, env, args.core_mask, True))
            single = medians(singles)
            results[auth] = {"baseline_1_client": single}
            for n in counts:
                many = medians(loads[n])
                results[auth][f"load_{n}_clients"] = many
                results[auth][f"throughput_ratio_{n}"] = many["inferences_per_s"] / single["inferences_per_s"]
                results[auth][f"p99_ratio_{n}"] = many["p99_ms"] / single["p99_ms"]
            results[auth]["repeats"] = {"baseline": singles, **{f"load_{n}": runs for n, runs in loads.items()}}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for auth, sections in results.items():
        print(f"[auth {auth}]")
        for name, values in sections.items():
            if name == "repeats":
                continue
            if isinstance(values, dict):
                print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in values.items()))  # fmt: skip
            else:
                print(f"  {name}: {values:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
