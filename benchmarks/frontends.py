"""Conversion time per framework: rkfarm's load_<framework> against the reference converter where one exists.

Each model is built by this script (random weights, real architectures): ResNet-18 TorchScript, MobileNet-SSD
300 Caffe, yolov3-tiny and yolov3 416 Darknet, MobileNetV2 224 as .tflite and as a frozen .pb. The reference is
what a user would otherwise run by hand: torch.onnx.export for TorchScript, tf2onnx for TFLite/TensorFlow (rkfarm
wraps both and adds its checks, shape inference and layout marks). Caffe and Darknet have no maintained
converter to compare with; their times are rkfarm's alone. Median of ``--repeat`` runs, each in this process
after one warm-up (the first TensorFlow import, ~3 s, is not counted).

    python benchmarks/frontends.py                    # all models, median of 3
    python benchmarks/frontends.py --models resnet18,yolov3-tiny --repeat 5 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass
class Case:
    framework: str
    make: Callable[[Path], tuple[Callable[[], object], Callable[[], object] | None, str]]


def _resnet18(folder: Path) -> tuple[Callable[[], object], Callable[[], object] | None, str]:
    import torch
    from torch_nets import resnet18

    from rkfarm.frontends.pytorch import OPSET, load_pytorch

    path = folder / "resnet18.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(resnet18(), torch.rand(1, 3, 224, 224)).save(str(path))

    def reference() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path)).eval()
            out = folder / "ref.onnx"
            torch.onnx.export(module, (torch.zeros(1, 3, 224, 224),), str(out), opset_version=OPSET, dynamo=False)
        return out

    return lambda: load_pytorch(path, [[1, 3, 224, 224]]), reference, "torch.onnx.export"


def _mobilenet_ssd(folder: Path) -> tuple[Callable[[], object], Callable[[], object] | None, str]:
    from caffe_nets import mobilenet_ssd

    from rkfarm.frontends.caffe import load_caffe

    proto, model = mobilenet_ssd(300).write(folder, "mobilenet_ssd")
    return lambda: load_caffe(proto, model), None, ""


def _darknet(which: str) -> Callable[[Path], tuple[Callable[[], object], Callable[[], object] | None, str]]:
    def make(folder: Path) -> tuple[Callable[[], object], Callable[[], object] | None, str]:
        import darknet_nets as dn

        from rkfarm.frontends.darknet import load_darknet

        net = dn.yolov3() if which == "yolov3" else dn.yolov3_tiny()
        cfg, weights, _ = dn.write(folder, net, seed=11)
        return lambda: load_darknet(cfg, weights), None, ""

    return make


def _mobilenet_v2(kind: str) -> Callable[[Path], tuple[Callable[[], object], Callable[[], object] | None, str]]:
    def make(folder: Path) -> tuple[Callable[[], object], Callable[[], object] | None, str]:
        import tf2onnx
        import tf_models

        model = tf_models.mobilenet_v2(224)
        if kind == "tflite":
            from rkfarm.frontends.tflite import load_tflite

            path = tf_models.save_tflite(model, folder / "mobilenet_v2.tflite")
            return (
                lambda: load_tflite(path),
                lambda: tf2onnx.convert.from_tflite(str(path), opset=17),
                "tf2onnx.convert.from_tflite",
            )
        import tensorflow as tf

        from rkfarm.frontends.tensorflow import load_tensorflow

        path, inputs, outputs = tf_models.keras_pb(model, folder / "mobilenet_v2.pb")
        graph_def = tf.compat.v1.GraphDef.FromString(path.read_bytes())

        def reference() -> object:
            return tf2onnx.convert.from_graph_def(
                graph_def, input_names=[f"{n}:0" for n in inputs], output_names=[f"{n}:0" for n in outputs], opset=17
            )

        load = lambda: load_tensorflow(path, inputs, [[1, 224, 224, 3]], outputs)  # noqa: E731
        return load, reference, "tf2onnx.convert.from_graph_def"

    return make


CASES: dict[str, Case] = {
    "resnet18": Case("pytorch", _resnet18),
    "mobilenet-ssd": Case("caffe", _mobilenet_ssd),
    "yolov3-tiny": Case("darknet", _darknet("yolov3-tiny")),
    "yolov3": Case("darknet", _darknet("yolov3")),
    "mobilenet-v2-tflite": Case("tflite", _mobilenet_v2("tflite")),
    "mobilenet-v2-pb": Case("tensorflow", _mobilenet_v2("pb")),
}


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: first imports, caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per model (median; default 3)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            folder = Path(tmp) / name
            folder.mkdir()
            case = CASES[name]
            with contextlib.redirect_stdout(sys.stderr):  # Keras prints its saved signatures
                load, reference, ref_name = case.make(folder)
            row: dict[str, Any] = {"model": name, "framework": case.framework, "rkfarm_s": _median_s(load, args.repeat)}
            if reference is not None:
                row["reference"] = ref_name
                row["reference_s"] = _median_s(reference, args.repeat)
                row["ratio"] = row["rkfarm_s"] / row["reference_s"]
            rows.append(row)
            print(f"{name}: {row}", file=sys.stderr)
    print(f"| model | framework | rkfarm load (median of {args.repeat}) | reference converter | reference | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ref = f"{r['reference_s']:.2f} s" if "reference_s" in r else "—"
        ratio = f"{r['ratio']:.2f}×" if "ratio" in r else "—"
        cells = [r["model"], r["framework"], f"{r['rkfarm_s']:.2f} s", r.get("reference", "none"), ref, ratio]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
