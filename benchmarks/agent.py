"""Agent benchmarks on loopback, each against a baseline measured in the same run.

  python benchmarks/agent.py [--quick] [--json] [--only floor,latency,tensors,upload,startup,discovery]

latency    remote inference round trip vs the same package in-process (PP-OCR classifier, batch 1):
           added latency p50/p90 (target p50 <= 0.3 ms); unary and streamed
tensors    8 MB in, 8 MB out round trip (a Neg model the script builds): effective GB/s (target >= 1)
           vs the same bytes through numpy copies in-process
upload     model upload MB/s into a fresh store (target >= 300 MB/s) vs writing the file locally
startup    agent start-to-serving time (target <= 1.5 s) and idle RSS (target <= 80 MB)
discovery  time for the host to find 8 agents by mDNS on 127.0.0.1
floor      the same kinds of call against a bare gRPC server doing no work (benchmarks/_grpc_floor.py): what
           gRPC Python itself costs on this machine, under every figure above
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import psutil
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, median, p

os.environ.setdefault("RKFARM_MDNS_INTERFACES", "127.0.0.1")

from rkfarm import RKNN
from rkfarm.remote.client import AgentClient
from rkfarm.remote.discovery import list_devices
from rkfarm.remote.local import LocalAgent
from rkfarm.samples import text_lines
from rkfarm.zoo import packaged_model
from rkfarm_proto.package import atomic_write, pack, read_package, sha256_hex
from rkfarm_proto.tensors import to_tensor
from rkfarm_proto.v1 import agent_pb2


def build_cls(out: Path) -> Path:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3])
        rknn.load_onnx(str(packaged_model("ppocr-cls").path()), input_size_list=[[1, 3, 48, 192]])
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


def build_neg(out: Path, elements: int) -> Path:
    """y = -x on float32[1, elements]: the model does almost nothing, so transport dominates."""
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"], name="neg")],
        "neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, elements])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, elements])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    src = out.with_suffix(".onnx")
    onnx.save(model, src)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(src))
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


def bench_latency(agent: LocalAgent, pkg: Path, rounds: int) -> dict[str, Any]:
    image = text_lines(1, seed=1)[0].image[np.newaxis]
    with RKNN(raise_errors=True) as local, RKNN(raise_errors=True) as remote:
        local.load_rknn(str(pkg))
        local.init_runtime()
        remote.load_rknn(str(pkg))
        remote.init_runtime(target="rk3588", device_id=agent.address)
        s = interleaved(
            {"in_process": lambda: local.inference([image]), "remote": lambda: remote.inference([image])},
            rounds=rounds,
            per_round=40,
        )
    added = [r - i for r, i in zip(sorted(s["remote"]), sorted(s["in_process"]))]
    return {
        "in_process_p50_us": median(s["in_process"]),
        "remote_p50_us": median(s["remote"]),
        "remote_p90_us": p(s["remote"], 90),
        "added_p50_us": median(s["remote"]) - median(s["in_process"]),
        "added_p90_us": p(added, 90),
        "runs": len(s["remote"]),
    }


def bench_stream(agent: LocalAgent, pkg: Path, count: int) -> dict[str, Any]:
    """Throughput of many requests on one InferStream call vs the same number of unary calls."""
    package = read_package(pkg)
    blob = pack(package.header, package.payload)[1]
    image = text_lines(1, seed=1)[0].image[np.newaxis]
    with AgentClient(agent.address) as client:
        client.ensure_model(blob)
        session = client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id
        request = AgentClient.infer_request(session, [image], None, None)
        t0 = time.perf_counter()
        for _ in range(count):
            client.infer(request)
        unary_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = sum(1 for _ in client.infer_stream(request for _ in range(count)))
        stream_s = time.perf_counter() - t0
        client.unload(session)
    assert n == count
    return {"requests": count, "unary_per_s": count / unary_s, "stream_per_s": count / stream_s}


class GrpcFloor:
    """benchmarks/_grpc_floor.py in a subprocess: gRPC Python with none of the agent's work."""

    def __enter__(self) -> GrpcFloor:
        script = Path(__file__).parent / "_grpc_floor.py"
        self.proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.address = f"127.0.0.1:{int(self.proc.stdout.readline())}"
        self.client = AgentClient(self.address)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.proc.kill()
        self.proc.wait()


def bench_floor(rounds: int) -> dict[str, Any]:
    """What gRPC Python alone costs here: a small unary call, a lock-step stream step, 8 MB echo, upload."""
    blob = np.random.default_rng(2).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    with GrpcFloor() as floor:
        stub = floor.client._stub
        small = agent_pb2.GetModelRequest(sha256="0" * 64)
        big = agent_pb2.InferRequest(inputs=[to_tensor(np.zeros(2 << 20, np.float32))])
        stream = floor.client.lockstep()
        step = agent_pb2.InferRequest(session_id="x")
        s = interleaved(
            {"unary": lambda: stub.GetModel(small, timeout=10), "stream": lambda: stream.call(step)},
            rounds=rounds,
            per_round=50,
        )
        stream.close()
        echo = interleaved({"echo": lambda: stub.Infer(big, timeout=30)}, rounds=max(3, rounds // 2), per_round=5)
        t0 = time.perf_counter()
        stub.Upload(
            (agent_pb2.UploadChunk(data=blob[i : i + (4 << 20)]) for i in range(0, len(blob), 4 << 20)), timeout=60
        )
        upload_s = time.perf_counter() - t0
    return {
        "unary_call_p50_us": median(s["unary"]),
        "stream_step_p50_us": median(s["stream"]),
        "echo_8MB_each_way_GBps": 2 * (8 << 20) / (median(echo["echo"]) * 1e-6) / 1e9,
        "upload_discarded_MBps": len(blob) / upload_s / 1e6,
    }


def bench_tensors(agent: LocalAgent, work: Path, rounds: int) -> dict[str, Any]:
    elements = 2 * 1024 * 1024  # 8 MB of float32
    pkg = build_neg(work / "neg.rkfm", elements)
    x = np.random.default_rng(0).standard_normal((1, elements), dtype=np.float32)
    with RKNN(raise_errors=True) as remote:
        remote.load_rknn(str(pkg))
        remote.init_runtime(target="rk3588", device_id=agent.address)
        out = remote.inference([x])
        assert out is not None and np.array_equal(out[0], -x)
        s = interleaved(
            {"remote": lambda: remote.inference([x]), "copies": lambda: (x.tobytes(), (-x).tobytes())},
            rounds=rounds,
            per_round=5,
            warmup=3,
        )
    moved = 2 * x.nbytes
    return {
        "bytes_per_round_trip": moved,
        "round_trip_p50_ms": median(s["remote"]) / 1000,
        "effective_GBps": moved / (median(s["remote"]) * 1e-6) / 1e9,
        "in_process_copy_GBps": moved / (median(s["copies"]) * 1e-6) / 1e9,
    }


def bench_upload(work: Path, size_mb: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    from rkfarm_proto.v1 import package_pb2

    results = []
    local_rates = []
    payload = rng.integers(0, 255, size_mb * 1024 * 1024, dtype=np.uint8).tobytes()
    agent = LocalAgent(work / "up" / "store", "upload", "--max-upload", "1G", "--store-capacity", "4G", advertise=False)
    with agent, AgentClient(agent.address) as client:
        client.info()  # connection warm
        for i in range(3):
            header = package_pb2.PackageHeader(source_model_name=f"blob{i}", payload_kind=package_pb2.PAYLOAD_KIND_ONNX)
            blob = pack(header, payload)[1]
            sha = sha256_hex(blob)  # the host hashes a package once, when it opens it
            t0 = time.perf_counter()
            atomic_write(work / f"local{i}.bin", blob)
            local_rates.append(len(blob) / (time.perf_counter() - t0) / 1e6)
            t0 = time.perf_counter()
            sent = client.ensure_model(blob, sha)
            elapsed = time.perf_counter() - t0
            assert sent == len(blob) and client.model_status(sha).present
            results.append(len(blob) / elapsed / 1e6)
    return {"size_MB": size_mb, "upload_MBps_median": median(results), "local_write_MBps_median": median(local_rates)}


def bench_startup(work: Path, repeats: int) -> dict[str, Any]:
    starts, rss = [], []
    for i in range(repeats):
        agent = LocalAgent(work / f"start{i}" / "store", f"start-{i}").start()
        starts.append(agent.started_in_s)
        time.sleep(2.0)  # let mDNS registration finish: idle means advertising too
        assert agent.proc is not None
        rss.append(psutil.Process(agent.proc.pid).memory_info().rss / 2**20)
        agent.stop()
    return {"start_to_serving_s_median": median(starts), "idle_rss_MB_median": median(rss), "repeats": repeats}


def bench_discovery(work: Path, count: int, repeats: int) -> dict[str, Any]:
    agents = [LocalAgent(work / f"disc{i}" / "store", f"disc-{i:02d}").start() for i in range(count)]
    try:
        time.sleep(3.0)  # all registered (mDNS probing takes ~1.5 s each)
        ids = {a.agent_id for a in agents}
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            found: set[str] = set()
            while not ids <= found and time.perf_counter() - t0 < 15:
                found |= {d.agent_id for d in list_devices(timeout_s=0.5, stop_when=None)}
            times.append(time.perf_counter() - t0)
            assert ids <= found, f"found only {sorted(found)}"
        return {"agents": count, "time_to_find_all_s_median": median(times), "repeats": repeats}
    finally:
        for a in agents:
            a.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", default="floor,latency,tensors,upload,startup,discovery")
    args = parser.parse_args()
    only = set(args.only.split(","))
    rounds = 5 if args.quick else 20
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rkfarm-bench-") as tmp:
        work = Path(tmp)
        if "floor" in only:
            results["grpc_floor"] = bench_floor(rounds)
        if only & {"latency", "tensors"}:
            pkg = build_cls(work / "cls.rkfm")
            with LocalAgent(work / "main" / "store", "bench-main", advertise=False) as agent:
                if "latency" in only:
                    results["latency"] = bench_latency(agent, pkg, rounds)
                    results["stream"] = bench_stream(agent, pkg, 200 if args.quick else 1000)
                if "tensors" in only:
                    results["tensors"] = bench_tensors(agent, work, max(3, rounds // 2))
        if "upload" in only:
            results["upload"] = bench_upload(work, 32 if args.quick else 128)
        if "startup" in only:
            results["startup"] = bench_startup(work, 3 if args.quick else 5)
        if "discovery" in only:
            results["discovery"] = bench_discovery(work, 8, 3 if args.quick else 5)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for section, values in results.items():
        print(f"[{section}]")
        for key, value in values.items():
            print(f"  {key:<28}{value:.3f}" if isinstance(value, float) else f"  {key:<28}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
