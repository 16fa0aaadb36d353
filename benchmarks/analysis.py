"""Accuracy analysis time and auto hybrid quantization, each beside its baseline in the same run.

    python benchmarks/analysis.py [--repeat 5] [--json]

1. ``accuracy_analysis`` on the PP-OCR text-direction classifier (rapidocr-onnxruntime) at 1x3x48x192, int8
   ``normal`` calibrated on 50 rendered text lines (seed 1), one input image, everything written (error_analysis.txt,
   report.html, golden/ and simulator/ dumps): the first call and the median of ``--repeat`` more. Beside it, in
   the same run: the same call with ``target=`` on a local agent (``rkfarm-agent serve`` on loopback: the
   instrumented package uploaded and run there, plus the runtime/ dumps), and the vendor's figure from the issue
   (RKNN-Toolkit2 on this machine class: 1.7 s).
2. ``build(auto_hybrid=True)`` on PP-OCRv4 recognition (48x320, 24 calibration lines of width 320, seed 1,
   ``--threshold``, default ``auto_hybrid_cos_thresh=0.99``: since issue 14 the plain int8 build is above the
   toolkit's default 0.98 on these lines, so the search would have nothing to do): the layers kept in float and
   the output cosine before -> after on the samples the search measured (the first 8 calibration lines), and on
   16 held-out lines (seed 2) against the float32 build, with the CTC best-character agreement; the plain int8
   build is the baseline, timed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rkfarm import RKNN
from rkfarm.remote.local import LocalAgent
from rkfarm.samples import text_lines
from rkfarm.zoo import packaged_model

VENDOR_ANALYSIS_S = 1.7  # RKNN-Toolkit2 accuracy_analysis, PP-OCR classifier, one input (the issue)
CLS_SIZE = [1, 3, 48, 192]
REC_SIZE = [1, 3, 48, 320]
HALF = [[127.5] * 3]


def _dataset(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    path = folder / "dataset.txt"
    path.write_text("".join(f"{i:03d}.png\n" for i in range(len(images))))
    return path


def _rknn(key: str, size: list[int], **config: Any) -> RKNN:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=HALF, std_values=HALF, target_platform="rk3588", **config)
    rknn.load_onnx(str(packaged_model(key).path()), input_size_list=[size])
    return rknn


def bench_analysis(work: Path, repeat: int) -> dict[str, Any]:
    dataset = _dataset(work / "cls", [line.image for line in text_lines(50, seed=1)])
    sample = str(dataset.parent / "000.png")
    rknn = _rknn("ppocr-cls", CLS_SIZE)
    rknn.build(do_quantization=True, dataset=str(dataset))

    def timed(**kwargs: Any) -> float:
        started = time.perf_counter()
        rknn.accuracy_analysis([sample], output_dir=str(work / "snapshot"), **kwargs)
        return time.perf_counter() - started

    first = timed()
    runs = [timed() for _ in range(repeat)]
    result = rknn.analysis_result
    assert result is not None
    with LocalAgent(work / "agent" / "store", "bench-analysis", advertise=False) as agent:
        remote = [timed(target="rk3588", device_id=agent.address) for _ in range(repeat)]
    rknn.release()
    return {
        "layers": len(result.layers),
        "dumped_values": sum(np.load(p).size for p in (work / "snapshot" / "golden").rglob("*.npy")),
        "first_call_s": first,
        "median_s": statistics.median(runs),
        "with_agent_median_s": statistics.median(remote),
        "vendor_s": VENDOR_ANALYSIS_S,
        "worst_layer": result.worst(1)[0].name,
    }


def _outputs(rknn: RKNN, images: list[np.ndarray]) -> list[np.ndarray]:
    rknn.init_runtime()
    outputs = [rknn.inference([img])[0] for img in images]  # type: ignore[index]
    rknn.release()
    return outputs


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _fidelity(want: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    return {
        "mean_cosine": float(np.mean([_cosine(w, g) for w, g in zip(want, got)])),
        "min_cosine": float(np.min([_cosine(w, g) for w, g in zip(want, got)])),
        "char_agreement": float(np.mean([np.mean(w[0].argmax(-1) == g[0].argmax(-1)) for w, g in zip(want, got)])),
    }


def bench_auto_hybrid(work: Path, threshold: float) -> dict[str, Any]:
    dataset = _dataset(work / "rec", [line.image for line in text_lines(24, seed=1, width=320)])
    held_out = [line.image for line in text_lines(16, seed=2, width=320)]
    reference = _rknn("ppocr-rec", REC_SIZE, float_dtype="float32")
    reference.build(do_quantization=False)
    want = _outputs(reference, held_out)
    plain = _rknn("ppocr-rec", REC_SIZE)
    started = time.perf_counter()
    plain.build(do_quantization=True, dataset=str(dataset))
    plain_s = time.perf_counter() - started
    hybrid = _rknn("ppocr-rec", REC_SIZE, auto_hybrid_cos_thresh=threshold)
    started = time.perf_counter()
    hybrid.build(do_quantization=True, dataset=str(dataset), auto_hybrid=True)
    hybrid_s = time.perf_counter() - started
    result = hybrid.hybrid_result
    assert result is not None
    return {
        "threshold": threshold,
        "candidates": len(result.ranking),
        "float_layers": result.float_layers,
        "search_samples": result.samples,
        "trials": result.trials,
        "search_cosine_before": result.before.cosine,
        "search_cosine_after": result.after.cosine,
        "held_out_int8": _fidelity(want, _outputs(plain, held_out)),
        "held_out_auto_hybrid": _fidelity(want, _outputs(hybrid, held_out)),
        "build_int8_s": plain_s,
        "build_auto_hybrid_s": hybrid_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threshold", type=float, default=0.99, help="auto_hybrid_cos_thresh (default: 0.99)")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "analysis": bench_analysis(Path(tmp), args.repeat),
            "auto_hybrid": bench_auto_hybrid(Path(tmp), args.threshold),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    a, h = results["analysis"], results["auto_hybrid"]
    print(f"accuracy_analysis, PP-OCR classifier 1x3x48x192 int8, one input ({a['layers']} layers, "
          f"{a['dumped_values']} values per dump folder)")  # fmt: skip
    print(f"  rkfarm, simulator:           first {a['first_call_s']:.2f} s, median {a['median_s']:.2f} s")
    print(f"  rkfarm, + local agent:       median {a['with_agent_median_s']:.2f} s")
    print(f"  vendor (issue):              {a['vendor_s']:.2f} s")
    print(f"auto_hybrid, PP-OCRv4 rec 48x320, threshold {h['threshold']}")
    print(f"  {len(h['float_layers'])} of {h['candidates']} layers kept float: {', '.join(h['float_layers'])}")
    print(f"  search ({h['search_samples']} samples, {h['trials']} trials): cosine "
          f"{h['search_cosine_before']:.4f} -> {h['search_cosine_after']:.4f}")  # fmt: skip
    for label, key in (("int8", "held_out_int8"), ("auto_hybrid", "held_out_auto_hybrid")):
        f = h[key]
        print(f"  held out, {label:<12} mean cosine {f['mean_cosine']:.4f} (min {f['min_cosine']:.4f}), "
              f"char agreement {f['char_agreement']:.3f}")  # fmt: skip
    print(f"  build: int8 {h['build_int8_s']:.1f} s, auto_hybrid {h['build_auto_hybrid_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
