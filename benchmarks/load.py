"""Agent throughput under load on loopback: many clients at once against one client, in the same run.

  python benchmarks/load.py [--quick] [--json] [--repeat 3] [--clients 32] [--per-client 50] [--procs 1]
                            [--auth none,token+mtls] [--core-mask 0] [--agent-args '...']

For each auth mode, one agent on 127.0.0.1 runs the PP-OCR text-direction classifier (float16 package):

baseline   one client, inferences one after another on the lock-step stream RKNN uses (what a single script
           sees): inferences/s and latency p50/p99
load       --clients clients at once (each its own RemoteRuntime, like separate RKNN objects), --per-client
           inferences each, spread over --procs host processes: total inferences/s, latency p50/p99/max,
           every answer compared with the simulator's

Sessions are opened and warmed before the clock starts; the agent keeps its default run slots (2 x CPUs).
With --repeat, baseline and load alternate and each figure is the median over the repeats (a shared machine
is noisy); the per-repeat values are in the --json output.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, p

os.environ.setdefault("RKFARM_MDNS_INTERFACES", "127.0.0.1")

from rkfarm import RKNN
from rkfarm.remote.credentials import Credentials
from rkfarm.remote.discovery import probe
from rkfarm.remote.local import LocalAgent
from rkfarm.remote.runtime import RemoteRuntime
from rkfarm.samples import text_lines
from rkfarm.zoo import packaged_model
from rkfarm_agent.certs import make_lab_pki
from rkfarm_proto.package import read_package
from rkfarm_proto.records import LoadOptions

IMAGES = 16


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
    """``clients`` RemoteRuntimes in threads; waits at the barrier, then runs; sends latencies and checks."""
    os.environ.update(env)
    package = read_package(Path(pkg))
    device = probe(address)
    images = [line.image for line in text_lines(IMAGES, seed=11)]
    expected = expected_outputs(Path(pkg), images)
    runtimes = [RemoteRuntime(package, device, LoadOptions(core_mask=core_mask)) for _ in range(clients)]
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
    out.put((latencies, wrong, time.perf_counter()))
    for rt in runtimes:
        rt.close()


def run_load(
    address: str, pkg: Path, clients: int, per_client: int, procs: int, env: dict[str, str], core_mask: int = 0
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    workers = [
        ctx.Process(
            target=client_process,
            args=(address, str(pkg), n, per_client, sum(shares[:i]), env, core_mask, barrier, out),
        )
        for i, n in enumerate(shares)
    ]
    for w in workers:
        w.start()
    barrier.wait(timeout=300)  # everyone has opened and warmed its sessions
    started = time.perf_counter()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(60)
    latencies = [x for r in results for x in r[0]]
    elapsed = max(r[2] for r in results) - started
    return {
        "clients": clients,
        "inferences": len(latencies),
        "wrong": sum(r[1] for r in results),
        "inferences_per_s": len(latencies) / elapsed,
        "p50_ms": median(latencies) * 1e3,
        "p99_ms": p(latencies, 99) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the repeats; wrong answers are summed (any one is a failure)."""
    out = {k: median([r[k] for r in runs]) if isinstance(runs[0][k], float) else runs[0][k] for k in runs[0]}
    out["wrong"] = sum(r["wrong"] for r in runs)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer inferences")
    parser.add_argument("--repeat", type=int, default=1, help="alternate baseline and load this many times")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--procs", type=int, default=1, help="host processes the clients are spread over")
    parser.add_argument("--auth", default="none", help="comma-separated: none, token, token+tls, token+mtls")
    parser.add_argument("--core-mask", type=int, default=0, help="init_runtime core_mask (0 = auto; 1 = one thread)")
    parser.add_argument(
        "--agent-args", default="", help="extra rkfarm-agent serve options, e.g. '--max-concurrent-runs 2'"
    )
    args = parser.parse_args()
    per_client = 10 if args.quick else args.per_client
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rkfarm-load-") as tmp:
        work = Path(tmp)
        pkg = build_cls(work / "cls.rkfm")
        for auth in args.auth.split(","):
            agent_args, env = secure_setup(work / auth, auth)
            room = str(args.clients + 8)
            limits = ["--max-sessions", room, "--max-sessions-per-client", room, "--max-streams-per-client", room]
            agent = LocalAgent(
                work / auth / "store", f"load-{auth}", *limits, *agent_args, *args.agent_args.split(),
                advertise=False, credentials=Credentials.load(env=env),
            )  # fmt: skip
            singles, loads = [], []
            with agent:
                for _ in range(args.repeat):
                    singles.append(run_load(agent.address, pkg, 1, per_client * 8, 1, env, args.core_mask))
                    loads.append(
                        run_load(agent.address, pkg, args.clients, per_client, args.procs, env, args.core_mask)
                    )
            single, many = medians(singles), medians(loads)
            results[auth] = {
                "baseline_1_client": single,
                f"load_{args.clients}_clients": many,
                "throughput_ratio": many["inferences_per_s"] / single["inferences_per_s"],
                "p99_ratio": many["p99_ms"] / single["p99_ms"],
                "repeats": {"baseline": singles, "load": loads},
            }
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
