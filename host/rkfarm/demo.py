"""The rkfarm demo: the PP-OCR text-direction classifier, from ONNX to answers.

    python -m rkfarm.demo [--count N] [--json]

Steps: render text lines (half upside down) with Pillow; convert the real classifier shipped in the PyPI
package rapidocr-onnxruntime with the vendor-compatible API (config -> load_onnx -> build -> export_rknn);
reload the package, run it on the simulator and score it against the labels and against the original ONNX
model; time it (eval_perf) and measure its memory (eval_memory). Then start a real board agent on loopback
(`rkfarm-agent serve`, advertised by mDNS on 127.0.0.1 only), discover it, and run, time and measure the
classifier there, as a host would drive a board.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rkfarm import RKNN
from rkfarm.errors import RkfarmError
from rkfarm.remote.discovery import list_devices
from rkfarm.remote.local import LocalAgent
from rkfarm.samples import TextLine, text_lines
from rkfarm.zoo import packaged_model

log = logging.getLogger("rkfarm.demo")

# Why the int8 figures next to float16's can puzzle: measured on the CPU, not on an NPU.
INT8_ON_CPU = (
    "why int8 is not faster or much smaller here: the simulator (like a board's onnxruntime backend) runs the int8 "
    "package as its quantize/dequantize graph on the CPU. ONNX Runtime fuses most convolutions into int8 kernels, "
    "but layers it has no int8 kernel for (HardSigmoid, elementwise Mul and Div here) run in float between a "
    "DequantizeLinear and a QuantizeLinear, and those conversions can cost more than the int8 math saves; the "
    "planned activation memory counts the int8 and the float copies. Weights shrink to int8, but biases stay int32 "
    "and per-channel scales float32, so the package is not half of float16's. An NPU runs int8 layers natively: "
    "judge int8 speed on a board with the rknnrt backend."
)


def run_demo(count: int, workdir: Path, with_agent: bool = True) -> dict[str, Any]:
    model = packaged_model("ppocr-cls")
    onnx_path = model.path()
    lines = text_lines(count, seed=2026)
    package_path = workdir / "ppocr_cls.rkfm"

    started = time.perf_counter()
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
        rknn.load_onnx(str(onnx_path), input_size_list=[list(model.input_size)])
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(package_path))
    build_s = time.perf_counter() - started

    reference = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(package_path))
        rknn.init_runtime(perf_debug=False)
        sim_outputs = _classify(rknn, lines)
        perf = rknn.eval_perf(is_print=False, runs=100, warmup=10)
        memory = rknn.eval_memory(is_print=False)
        assert perf is not None and memory is not None
    refs = []
    for line in lines:
        x = ((line.image.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis]
        refs.append(reference.run(None, {"x": x})[0][0])
    correct = sum(int(p.argmax() == line.label) for p, line in zip(sim_outputs, lines))
    agree = sum(int(p.argmax() == r.argmax()) for p, r in zip(sim_outputs, refs))
    worst_diff = max(float(np.abs(p - r).max()) for p, r in zip(sim_outputs, refs))
    int8_path, int8 = _int8(onnx_path, model.input_size, lines, refs, workdir)
    board = _on_local_agent(int8_path, lines, int8.pop("outputs"), workdir) if with_agent else None
    return {
        "model": str(onnx_path),
        "package": str(package_path),
        "package_bytes": package_path.stat().st_size,
        "build_seconds": round(build_s, 3),
        "samples": count,
        "accuracy_vs_labels": correct / count,
        "top1_agreement_vs_onnx": agree / count,
        "max_abs_diff_vs_onnx": worst_diff,
        "simulator": {
            "median_us": perf.stats.median_us,
            "p99_us": perf.stats.p99_us,
            "fps": perf.fps,
            "weight_memory": memory["weight_memory"],
            "internal_memory": memory["internal_memory"],
            "total_memory": memory["total_memory"],
        },
        "int8": int8,
        "agent": board,
    }


def _int8(
    onnx_path: Path, input_size: tuple[int, ...], lines: list[TextLine], refs: list[np.ndarray[Any, Any]], workdir: Path
) -> tuple[Path, dict[str, Any]]:
    """Quantize to int8 (w8a8, kl_divergence) on 40 other rendered lines and score it like the float build."""
    from PIL import Image

    calib = workdir / "calibration"
    calib.mkdir(exist_ok=True)
    names = []
    for i, line in enumerate(text_lines(40, seed=7)):
        Image.fromarray(line.image).save(calib / f"line{i:02d}.png")
        names.append(f"calibration/line{i:02d}.png")
    dataset = workdir / "dataset.txt"
    dataset.write_text("\n".join(names) + "\n")
    path = workdir / "ppocr_cls_int8.rkfm"
    started = time.perf_counter()
    with RKNN(raise_errors=True) as rknn:
        rknn.config(
            mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588",
            quantized_algorithm="kl_divergence",
        )  # fmt: skip
        rknn.load_onnx(str(onnx_path), input_size_list=[list(input_size)])
        rknn.build(do_quantization=True, dataset=str(dataset))
        rknn.export_rknn(str(path))
    build_s = time.perf_counter() - started
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(path))
        rknn.init_runtime()
        outputs = _classify(rknn, lines)
        perf = rknn.eval_perf(is_print=False, runs=100, warmup=10)
        memory = rknn.eval_memory(is_print=False)
        assert perf is not None and memory is not None
    cosines = [float(o @ r / (np.linalg.norm(o) * np.linalg.norm(r))) for o, r in zip(outputs, refs)]
    return path, {
        "package_bytes": path.stat().st_size,
        "build_seconds": round(build_s, 3),
        "accuracy_vs_labels": sum(int(o.argmax() == line.label) for o, line in zip(outputs, lines)) / len(lines),
        "top1_agreement_vs_onnx": sum(int(o.argmax() == r.argmax()) for o, r in zip(outputs, refs)) / len(lines),
        "mean_cosine_vs_onnx": float(np.mean(cosines)),
        "median_us": perf.stats.median_us,
        "weight_memory": memory["weight_memory"],
        "internal_memory": memory["internal_memory"],
        "note": INT8_ON_CPU,
        "outputs": outputs,
    }


def _classify(rknn: RKNN, lines: list[TextLine]) -> list[np.ndarray[Any, Any]]:
    outputs = []
    for line in lines:
        out = rknn.inference([line.image[np.newaxis]])
        assert out is not None
        outputs.append(out[0][0])
    return outputs


def _on_local_agent(
    package_path: Path, lines: list[TextLine], sim_outputs: list[np.ndarray[Any, Any]], workdir: Path
) -> dict[str, Any]:
    """Start an agent on loopback, find it by mDNS, and run the package there."""
    with LocalAgent(workdir / "agent-store", "demo-board") as agent:
        started = time.perf_counter()
        found = [d for d in list_devices(timeout_s=5.0, stop_when=agent.agent_id) if d.agent_id == agent.agent_id]
        discovery_s = time.perf_counter() - started
        if not found:
            raise RuntimeError("the local agent was not discovered by mDNS on 127.0.0.1")
        with RKNN(raise_errors=True) as rknn:
            rknn.load_rknn(str(package_path))
            rknn.init_runtime(target="rk3588", device_id=found[0].agent_id, perf_debug=True)
            remote = _classify(rknn, lines)
            perf = rknn.eval_perf(is_print=False, runs=100, warmup=10)
            memory = rknn.eval_memory(is_print=False)
            assert perf is not None and memory is not None
    slowest = sorted(perf.layers, key=lambda layer: layer.time_us, reverse=True)[:3]
    return {
        "agent_id": found[0].agent_id,
        "address": found[0].address,
        "agent_start_s": round(agent.started_in_s, 3),
        "discovery_s": round(discovery_s, 3),
        "max_abs_diff_vs_simulator": max(float(np.abs(a - b).max()) for a, b in zip(remote, sim_outputs)),
        "median_us": perf.stats.median_us,
        "p99_us": perf.stats.p99_us,
        "fps": perf.fps,
        "slowest_layers": [f"{layer.op_type} {layer.name} {layer.time_us:.1f} us" for layer in slowest],
        "weight_memory": memory["weight_memory"],
        "internal_memory": memory["internal_memory"],
        "total_memory": memory["total_memory"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40, help="text lines to classify (default 40)")
    parser.add_argument("--workdir", type=Path, help="where to write the package (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-agent", action="store_true", help="simulator only; skip the local agent")
    args = parser.parse_args(argv)
    # The demo's agent and discovery stay on loopback unless told otherwise.
    os.environ.setdefault("RKFARM_MDNS_INTERFACES", "127.0.0.1")
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="rkfarm-demo-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            result = run_demo(args.count, workdir, with_agent=not args.no_agent)
        except (RkfarmError, OSError) as exc:  # the model package missing, a port or folder refused: one line
            print(f"rkfarm demo: error: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    sim = result["simulator"]
    print("rkfarm demo: PP-OCR text-direction classifier (rapidocr-onnxruntime), float16 package")
    print(f"  built {result['package_bytes']} bytes in {result['build_seconds']:.2f} s")
    print(f"  {result['samples']} rendered text lines, half upside down:")
    print(f"    accuracy vs labels        {result['accuracy_vs_labels']:.1%}")
    print(f"    top-1 agreement vs ONNX   {result['top1_agreement_vs_onnx']:.1%}")
    print(f"    max |diff| vs ONNX        {result['max_abs_diff_vs_onnx']:.2e}")
    print(f"  simulator: median {sim['median_us']:.0f} us, p99 {sim['p99_us']:.0f} us, {sim['fps']:.0f} FPS")
    print(
        f"  memory: weights {sim['weight_memory'] / 1024:.0f} KiB, activations {sim['internal_memory'] / 1024:.0f} KiB,"
        f" total {sim['total_memory'] / 1024:.0f} KiB"
    )
    q = result["int8"]
    print(f"int8 package (w8a8, kl_divergence, 40 calibration lines): {q['package_bytes']} bytes, built in "
          f"{q['build_seconds']:.2f} s")  # fmt: skip
    print(f"    accuracy vs labels        {q['accuracy_vs_labels']:.1%}")
    print(f"    top-1 agreement vs ONNX   {q['top1_agreement_vs_onnx']:.1%}")
    print(f"    mean cosine vs ONNX       {q['mean_cosine_vs_onnx']:.4f}")
    print(f"    simulator median          {q['median_us']:.0f} us")
    print(f"    memory: weights {q['weight_memory'] / 1024:.0f} KiB, activations {q['internal_memory'] / 1024:.0f} KiB")
    print(textwrap.fill(q["note"], width=110, initial_indent="  ", subsequent_indent="  "))
    board = result["agent"]
    if board:
        print(f"board agent {board['agent_id']} at {board['address']} (local, loopback), int8 package:")
        print(f"  started in {board['agent_start_s']:.2f} s, found by mDNS in {board['discovery_s']:.2f} s")
        print(f"  max |diff| vs simulator   {board['max_abs_diff_vs_simulator']:.2e}")
        print(f"  eval_perf: median {board['median_us']:.0f} us, p99 {board['p99_us']:.0f} us, {board['fps']:.0f} FPS")
        print(f"  slowest layers: {'; '.join(board['slowest_layers'])}")
        print(
            f"  eval_memory: weights {board['weight_memory'] / 1024:.0f} KiB, activations "
            f"{board['internal_memory'] / 1024:.0f} KiB, total {board['total_memory'] / 1024:.0f} KiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
