"""The board farm at scale: N agents, each in its own network namespace on one bridge, a host in another.

  sudo python benchmarks/farm.py [--sizes 8,32,64,100] [--repeats 5] [--json out.json]

For each N (rkfarm.farm.netns builds the namespaces and removes them afterwards):

discover   a fresh host process until all N are in its registry: the first with no registry cache (cold), the
           others with the cache the previous one wrote; found/N each time (completeness over repeats)
devices    `rkfarm devices` wall time with a warm registry cache (interpreter start included; target < 1 s)
by_id      N threads in one process, each init_runtime(device_id='board-NNN') + one inference: ok/N per repeat
           (target: N of N, every time)
control    upload + open (Load) + release, one board alone, then all N at once from one process: per-board
           medians of each step and the wall time of the whole (target for 100: < 5 s)
sweep      eval_perf (50 runs) on one board, then on all N through DevicePool.map / sweep(): wall time
crash      a SIGKILLed agent (no goodbye): seconds until the registry drops it (target < 10 s)

The machine's compute limit applies: all agents share this host's CPUs (2 here), so a sweep's wall time grows
with N once the boards' model runs outnumber the cores; real boards each bring their own CPU and NPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()


# -- models ------------------------------------------------------------------------------------------------------
def build_models(work: Path, count: int) -> list[str]:
    """``count`` small conv packages that differ in their weights (each upload is a real one)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from rkfarm import RKNN

    paths = []
    for i in range(count):
        rng = np.random.default_rng(100 + i)
        w = numpy_helper.from_array(rng.normal(0, 0.2, (16, 3, 3, 3)).astype(np.float32), "w")
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
            "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 64, 64])], [w],
        )  # fmt: skip
        source = work / f"m{i}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
        with RKNN(raise_errors=True) as rknn:
            rknn.config(target_platform="rk3588", float_dtype="float32")
            rknn.load_onnx(str(source))
            rknn.build(do_quantization=False)
            rknn.export_rknn(str(work / f"m{i}.rkfm"))
        paths.append(str(work / f"m{i}.rkfm"))
    return paths


# -- the outer side: namespaces and agents -----------------------------------------------------------------------
def run_size(n: int, repeats: int, root: Path) -> dict[str, Any]:
    from rkfarm.farm.netns import NetnsFarm

    work = root / f"n{n}"
    work.mkdir(parents=True)
    models = build_models(work, repeats + 2)
    result: dict[str, Any] = {"agents": n}
    with NetnsFarm(work, n) as farm:
        started = time.perf_counter()
        agents = [farm.start_agent(i, f"board-{i:03d}", platform="rk3588", tags=[f"lab={i % 4}"]) for i in range(n)]
        farm.wait_serving(agents, timeout_s=60 + 3 * n)
        result["agents_serving_s"] = time.perf_counter() - started
        farm.wait_advertised(agents, timeout_s=60 + n)
        result["agents_advertised_s"] = time.perf_counter() - started
        time.sleep(10.0)  # the start-up burst of N processes on this machine's CPUs dies down before measuring
        ids = [a.agent_id for a in agents]

        def inner(scenario: str, **args: Any) -> dict[str, Any]:
            out = farm.run_host([sys.executable, str(HERE), "--inner", scenario, json.dumps(args)], timeout_s=900)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not lines:
                raise RuntimeError(f"{scenario} (N={n}) failed:\n{out.stderr[-3000:]}")
            return dict(json.loads(lines[-1]))

        cache = work / "registry-cache"
        discover = []
        for r in range(repeats):
            if r == 0:
                subprocess.run(["rm", "-rf", str(cache)])
            discover.append(inner("discover", ids=ids, timeout_s=30))
        result["discover"] = discover
        devices = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = farm.run_host([sys.executable, "-m", "rkfarm.cli", "devices", "--json"])
            took = time.perf_counter() - t0
            found = len({d["agent_id"] for d in json.loads(out.stdout)}) if out.returncode == 0 else 0
            devices.append({"wall_s": took, "found": found})
        result["devices"] = devices
        result["by_id"] = inner("by_id", ids=ids, package=models[0], repeats=repeats)
        result["control"] = inner("control", ids=ids, packages=models[1:])
        result["sweep"] = inner("sweep", ids=ids, package=models[0])
        victims = [a.proc.pid for a in agents[-3:] if a.proc is not None]
        result["crash"] = inner("crash", ids=ids[-3:], pids=victims)
        rss = []
        for agent in agents[: min(8, n)]:
            if agent.running() and agent.proc is not None:
                with open(f"/proc/{agent.proc.pid}/status") as fh:
                    rss += [int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS")]
        result["agent_rss_mb_median"] = statistics.median(rss) if rss else None
    return result


# -- the inner side: host-side measurements, run in the host namespace --------------------------------------------
def inner_discover(args: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    from rkfarm.remote.registry import shared_registry

    imported = time.perf_counter() - started
    registry = shared_registry()
    wanted = set(args["ids"])
    deadline = time.monotonic() + args["timeout_s"]
    first_all = None
    while time.monotonic() < deadline:
        found = {d.agent_id for d in registry.devices()}
        if wanted <= found:
            first_all = time.perf_counter() - started - imported
            break
        time.sleep(0.01)
    t0 = time.perf_counter()
    registry.settle(5.0)
    settle_s = time.perf_counter() - t0 + (time.perf_counter() - started - imported if first_all is None else 0)
    found = {d.agent_id for d in registry.devices()}
    return {"all_found_s": first_all, "found": len(found & wanted), "wanted": len(wanted), "import_s": imported,
            "settled_after_all_s": settle_s}  # fmt: skip


def inner_by_id(args: dict[str, Any]) -> dict[str, Any]:
    from rkfarm import RKNN

    x = np.zeros((1, 64, 64, 3), np.float32)
    rounds = []
    for _ in range(args["repeats"]):
        ok: list[str] = []
        errors: dict[str, str] = {}
        lock = threading.Lock()

        def one(agent_id: str, ok: list[str] = ok, errors: dict[str, str] = errors, lock: Any = lock) -> None:
            rknn = RKNN(raise_errors=True)
            try:
                rknn.load_rknn(args["package"])
                rknn.init_runtime(target="rk3588", device_id=agent_id)
                rknn.inference([x])
                with lock:
                    ok.append(agent_id)
            except Exception as exc:
                with lock:
                    errors[agent_id] = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                rknn.release()

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in args["ids"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rounds.append({"ok": len(ok), "of": len(args["ids"]), "wall_s": time.perf_counter() - t0,
                       "errors": dict(list(errors.items())[:3])})  # fmt: skip
    return {"rounds": rounds}


def _control_one(address: str, blob: bytes, sha: str) -> dict[str, float]:
    from rkfarm.remote.client import AgentClient
    from rkfarm_proto.v1 import agent_pb2

    with AgentClient(address, timeout_s=60) as client:
        t0 = time.perf_counter()
        client.ensure_model(blob, sha)
        t1 = time.perf_counter()
        session = client.load(agent_pb2.LoadRequest(model_sha256=sha, client="bench")).session_id
        t2 = time.perf_counter()
        client.unload(session)
        t3 = time.perf_counter()
    return {"upload_s": t1 - t0, "open_s": t2 - t1, "release_s": t3 - t2, "total_s": t3 - t0}


def inner_control(args: dict[str, Any]) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from rkfarm.remote.registry import shared_registry
    from rkfarm_proto.package import pack, read_package, sha256_hex

    registry = shared_registry()
    registry.settle(10.0)
    address = {d.agent_id: d.address for d in registry.devices()}
    blobs = []
    for path in args["packages"]:
        package = read_package(Path(path))
        blob = pack(package.header, package.payload)[1]
        blobs.append((blob, sha256_hex(blob)))
    ids = args["ids"]
    single = _control_one(address[ids[0]], *blobs[0])
    out: dict[str, Any] = {"one_board": single, "rounds": []}
    for blob, sha in blobs[1:]:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(128, len(ids))) as pool:
            steps = list(pool.map(lambda i, b=blob, s=sha: _control_one(address[i], b, s), ids))
        wall = time.perf_counter() - t0
        out["rounds"].append({
            "wall_s": wall, "bytes": len(blob),
            **{f"{k}_median": statistics.median(s[k] for s in steps) for k in ("upload_s", "open_s", "release_s")},
        })  # fmt: skip
    return out


def inner_sweep(args: dict[str, Any]) -> dict[str, Any]:
    from rkfarm.farm.pool import DevicePool
    from rkfarm.farm.sweep import sweep

    with DevicePool(timeout_s=120) as pool:
        pool.wait_for(None, len(args["ids"]), 30)
        one = sweep(args["package"], f"id={args['ids'][0]}", pool=pool, runs=50, memory=False)
        every = sweep(args["package"], None, pool=pool, runs=50, memory=False, max_workers=len(args["ids"]))
    medians = [b.median_us for b in every.succeeded if b.median_us]
    return {
        "one_wall_s": one.wall_s, "one_median_us": one.boards[0].median_us if one.boards else None,
        "all_wall_s": every.wall_s, "all_ok": len(every.succeeded), "all_of": len(every.boards),
        "all_median_of_medians_us": statistics.median(medians) if medians else None,
    }  # fmt: skip


def inner_crash(args: dict[str, Any]) -> dict[str, Any]:
    import queue

    from rkfarm.remote.registry import shared_registry

    registry = shared_registry()
    left: queue.Queue[tuple[str, float]] = queue.Queue()
    registry.subscribe(lambda event, d: left.put((d.agent_id, time.monotonic())) if event == "left" else None)
    registry.settle(10.0)
    times = []
    for agent_id, pid in zip(args["ids"], args["pids"]):
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while True:
            gone, when = left.get(timeout=60)
            if gone == agent_id:
                times.append(when - killed)
                break
    return {"left_after_s": times}


# -- reporting ---------------------------------------------------------------------------------------------------
def summary(results: list[dict[str, Any]]) -> str:
    columns = ["N", "agents serving / advertised", "discover all: cold / cached (s)", "found, every repeat",
               "`rkfarm devices` warm (s)", "by id: ok per repeat", "control one board (s)", "control all N (s)",
               "sweep 1 / N (s)", "crash leaves (s)"]  # fmt: skip
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        disc = r["discover"]
        cold = disc[0]["all_found_s"]
        cached = [d["all_found_s"] for d in disc[1:] if d["all_found_s"] is not None]
        found = ", ".join(f"{d['found']}/{d['wanted']}" for d in disc)
        dev = statistics.median(d["wall_s"] for d in r["devices"])
        by_id = ", ".join(f"{x['ok']}/{x['of']}" for x in r["by_id"]["rounds"])
        one = r["control"]["one_board"]["total_s"]
        walls = [x["wall_s"] for x in r["control"]["rounds"]]
        sweep_ = r["sweep"]
        crash = ", ".join(f"{t:.1f}" for t in r["crash"]["left_after_s"])
        rows.append(
            f"| {r['agents']} | {r['agents_serving_s']:.1f} / {r['agents_advertised_s']:.1f} s | {cold:.2f} / "
            f"{statistics.median(cached) if cached else float('nan'):.2f} | {found} | {dev:.2f} | {by_id} | "
            f"{one:.3f} | {statistics.median(walls):.2f} (min {min(walls):.2f}) | "
            f"{sweep_['one_wall_s']:.2f} / {sweep_['all_wall_s']:.2f} ({sweep_['all_ok']}/{sweep_['all_of']} ok) | "
            f"{crash} |"
        )
    return "\n".join(rows)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        scenario, args = sys.argv[2], json.loads(sys.argv[3])
        print(json.dumps(globals()[f"inner_{scenario}"](args)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,32,64,100", help="agent counts (default 8,32,64,100)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    from rkfarm.farm.netns import available

    ok, why = available()
    if not ok:
        print(f"farm benchmark: cannot run here: {why}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="rkfarm-farm-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            print(f"N={n} ...", file=sys.stderr, flush=True)
            results.append(run_size(n, args.repeats, Path(tmp)))
            print(json.dumps(results[-1], default=str)[:600], file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"CPUs: {os.cpu_count()}; load average before: {os.getloadavg()}")
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
