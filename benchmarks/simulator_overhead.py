"""Simulator inference latency vs a plain ONNX Runtime session on the same model, in the same run.

    python benchmarks/simulator_overhead.py [--rounds 30] [--per-round 50] [--json]

Model: the PP-OCR text-direction classifier (rapidocr-onnxruntime) at 1x3x48x192, batch 1.
Two comparisons, each against a baseline measured interleaved with it:
  * wrapper only: RKNN.inference on a prepared NCHW float input (pass-through) vs session.run on the same
    payload with the same array;
  * full path: RKNN.inference on a uint8 NHWC image (layout + mean/std done by rkfarm) vs numpy
    preprocessing by hand + session.run.
Reports medians and the overhead ratio. Target: wrapper overhead under 5% at batch 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, median

from rkfarm import RKNN
from rkfarm.samples import text_lines
from rkfarm.zoo import packaged_model
from rkfarm_proto.package import read_package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--float-dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    onnx_path = packaged_model("ppocr-cls").path()
    results: dict[str, object] = {"model": "ppocr-cls 1x3x48x192", "float_dtype": args.float_dtype}
    with tempfile.TemporaryDirectory() as tmp, RKNN(raise_errors=True) as rknn:
        pkg_path = Path(tmp) / "cls.rkfm"
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], float_dtype=args.float_dtype)
        rknn.load_onnx(str(onnx_path), input_size_list=[[1, 3, 48, 192]])
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(pkg_path))
        payload = read_package(pkg_path).payload
        rknn.init_runtime()

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])
        image = text_lines(1, seed=1)[0].image[np.newaxis]
        nchw = ((image.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2).copy()
        mean = np.float32(127.5)

        def plain_prepared() -> object:
            return session.run(None, {"x": nchw})

        def rkfarm_prepared() -> object:
            return rknn.inference([nchw], data_format="nchw", inputs_pass_through=[1])

        def plain_manual() -> object:
            x = ((image.astype(np.float32) - mean) / mean).transpose(0, 3, 1, 2)
            return session.run(None, {"x": np.ascontiguousarray(x)})

        def rkfarm_image() -> object:
            return rknn.inference([image])

        s = interleaved(
            {"plain_prepared": plain_prepared, "rkfarm_prepared": rkfarm_prepared,
             "plain_manual": plain_manual, "rkfarm_image": rkfarm_image},
            rounds=args.rounds, per_round=args.per_round,
        )  # fmt: skip
    med = {k: median(v) for k, v in s.items()}
    results["median_us"] = med
    results["wrapper_overhead"] = med["rkfarm_prepared"] / med["plain_prepared"] - 1
    results["full_path_overhead"] = med["rkfarm_image"] / med["plain_manual"] - 1
    results["samples_per_case"] = args.rounds * args.per_round
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"simulator overhead, {results['model']}, {args.float_dtype}, {results['samples_per_case']} runs per case")
    print(f"{'case':<44}{'median us':>12}")
    labels = {
        "plain_prepared": "ONNX Runtime session.run (prepared NCHW)",
        "rkfarm_prepared": "RKNN.inference (prepared NCHW, pass-through)",
        "plain_manual": "numpy preprocessing + session.run",
        "rkfarm_image": "RKNN.inference (uint8 NHWC image)",
    }
    for key, label in labels.items():
        print(f"{label:<44}{med[key]:>12.1f}")
    print(f"wrapper overhead:   {results['wrapper_overhead']:+.1%}")
    print(f"full-path overhead: {results['full_path_overhead']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
