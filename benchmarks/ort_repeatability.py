"""Does this ONNX Runtime give the same bits every time it runs one int8 input? (docs/DESIGN-NOTES.md)

    python benchmarks/ort_repeatability.py [--processes 8] [--sessions 6] [--json]

Builds rkfarm's int8 YOLOv8n (nudenet's, 320x320, `normal`, 16 rendered scenes), then in each of ``--processes``
fresh processes opens ``--sessions`` plain ONNX Runtime sessions on its payload, runs 3 random inputs 3 times
each, and counts the runs whose output differs from the first session's first result. Each variant changes one
session setting: ``default``, ``1 thread``, ``unfused`` (``QDQSelectorActionTransformer`` off, what rkfarm's
sessions use before onnxruntime 1.25.1) and ``no optimization``. A process with any differing run is a failure:
the figure is how many processes failed. Then, in this process, the median latency of 50 runs of one input, fused
(ONNX Runtime's default) and unfused, in alternating rounds: what running unfused costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("default", "1 thread", "unfused", "no optimization")

PROBE = """
import sys, numpy as np, onnxruntime as ort
payload, variant, sessions = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
feeds = [{"images": rng.random((1, 3, 320, 320), dtype=np.float32)} for _ in range(3)]
differ, first = 0, None
for _ in range(sessions):
    so, kw = ort.SessionOptions(), {}
    if variant == "1 thread":
        so.intra_op_num_threads = 1
    elif variant == "no optimization":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif variant == "unfused":
        kw["disabled_optimizers"] = ["QDQSelectorActionTransformer"]
    session = ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"], **kw)
    outs = [session.run(None, feed)[0] for feed in feeds for _ in range(3)]
    first = first or outs[::3]
    differ += sum(not np.array_equal(out, first[k // 3]) for k, out in enumerate(outs))
print(differ)
"""


def build_payload(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from quant_fixtures import scenes, write_dataset

    from rkfarm import RKNN
    from rkfarm.zoo import packaged_model

    dataset = write_dataset(work / "cal", scenes(16, 1))
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[0.0] * 3], std_values=[[255.0] * 3], quantized_algorithm="normal")
        rknn.load_onnx(str(packaged_model("yolov8n-nudenet").path()), input_size_list=[[1, 3, 320, 320]])
        rknn.build(do_quantization=True, dataset=str(dataset))
        assert rknn.package is not None
        path = work / "yolov8n-int8.onnx"
        path.write_bytes(rknn.package.payload)
    return path


def unfused_cost(payload: Path, runs: int = 50, rounds: int = 3) -> dict[str, float]:
    """Median latency (us) of one input, fused and unfused, measured in alternating rounds in this process."""
    import numpy as np
    import onnxruntime as ort

    data = payload.read_bytes()
    feed = {"images": np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)}
    sessions = {
        "fused_us": ort.InferenceSession(data, providers=["CPUExecutionProvider"]),
        "unfused_us": ort.InferenceSession(
            data, providers=["CPUExecutionProvider"], disabled_optimizers=["QDQSelectorActionTransformer"]
        ),
    }
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for _ in range(rounds):
        for key, session in sessions.items():
            session.run(None, feed)  # warm-up
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, feed)
                times[key].append((time.perf_counter() - start) * 1e6)
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        payload = build_payload(Path(tmp))
        failed = {}
        for variant in VARIANTS:
            probe = [sys.executable, "-c", PROBE, str(payload), variant, str(args.sessions)]
            runs = [
                int(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
                for _ in range(args.processes)
            ]
            failed[variant] = sum(r > 0 for r in runs)
        latency = unfused_cost(payload)
    result = {"onnxruntime": onnxruntime.__version__, "processes": args.processes, "failed": failed, **latency}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"onnxruntime {onnxruntime.__version__}: processes (of {args.processes}) with run-to-run differences")
        for variant, count in failed.items():
            print(f"  {variant:16s} {count}")
        print(f"median latency: fused {latency['fused_us']:.0f} us, unfused {latency['unfused_us']:.0f} us "
              f"({latency['unfused_us'] / latency['fused_us']:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
