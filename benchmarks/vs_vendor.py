"""rkfarm against the vendor's RKNN-Toolkit2 2.5.0: the same models, calibration files and evaluation images, one run.

    python benchmarks/vs_vendor.py [--models ppocr-cls ...] [--algorithms normal ...] [--cal-count N]
        [--eval-count N] [--repeat 1] [--json out.json] [--no-vendor] [--no-bridge] [--keep DIR]

Models (rkfarm.zoo: shipped in rapidocr-onnxruntime and nudenet): the PP-OCR text-direction classifier, PP-OCRv4
text detection (at 320x320) and recognition, and YOLOv8n (NudeNet). Algorithms: normal, kl_divergence, mmse;
per channel, target rk3588, the models' own mean/std. Images: see ``_vendor_data`` — calibration from the clean
generators (seed 1), evaluation set A (seed 2) and the held-out set B (seed 3) from other seeds, "photographed".

* rkfarm: ``RKNN.config`` + ``load_onnx`` + ``build(do_quantization=True, dataset=...)`` timed (median of
  ``--repeat``), then its simulator (``init_runtime()``) on every evaluation image.
* vendor: the same calls on ``rknn.api.RKNN`` in its side environment (``rkfarm.vendor.env``; made on first use
  unless ``--no-vendor``), timed the same way inside its process, then the vendor simulator (``init_runtime()``
  with no target) on the same images.
* bridge (``--compiler vendor``): rkfarm's ranges for the same algorithm written into the vendor's
  ``.quantization.cfg`` (``rkfarm.vendor.bridge``), compiled by the vendor, run on the vendor simulator.

Fidelity is against the float ONNX model in ONNX Runtime on the same image (preprocessing written out here):
mean output cosine and the task measure (classifier: top-1 agreement; detector: text-mask IoU; recognizer:
per-step argmax agreement; YOLO: box IoU at the float model's 20 most confident anchors). Ratios are
rkfarm / vendor: above 1 for fidelity, below 1 for time, is rkfarm ahead. One model and algorithm re-runs in
a minute: ``--models ppocr-cls --algorithms normal``.
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
import numpy.typing as npt
import onnxruntime as ort
from _vendor_data import CASES, EVAL_SEEDS, Case, fidelity, preprocess
from quant_fixtures import write_dataset

from rkfarm import RKNN, __version__
from rkfarm.config import RknnConfig
from rkfarm.frontends.onnx import load_onnx
from rkfarm.zoo import packaged_model

log = logging.getLogger("vs_vendor")
ALGORITHMS = ("normal", "kl_divergence", "mmse")
Outputs = list[npt.NDArray[np.float32]]


def _config(case: Case, algorithm: str) -> dict[str, Any]:
    return {
        "mean_values": [case.mean],
        "std_values": [case.std],
        "quantized_algorithm": algorithm,
        "quantized_method": "channel",
        "target_platform": "rk3588",
    }


def _reference(case: Case, images: dict[str, np.ndarray]) -> dict[str, Outputs]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(packaged_model(case.key).path()), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return {s: [session.run(None, {name: preprocess(case, im)})[0] for im in ims] for s, ims in images.items()}


def _rkfarm(case: Case, algorithm: str, dataset: Path, images: dict[str, np.ndarray], repeat: int) -> dict[str, Any]:
    times = []
    gots: dict[str, Outputs] = {}
    for k in range(repeat):
        rknn = RKNN(raise_errors=True)
        started = time.perf_counter()
        rknn.config(**_config(case, algorithm))
        rknn.load_onnx(str(packaged_model(case.key).path()), input_size_list=[case.size])
        rknn.build(do_quantization=True, dataset=str(dataset))
        times.append(time.perf_counter() - started)
        if k == repeat - 1:
            rknn.init_runtime()
            for name, ims in images.items():
                gots[name] = [np.asarray(rknn.inference([im])[0], np.float32) for im in ims]  # type: ignore[index]
        rknn.release()
    return {"build_s": statistics.median(times), "build_runs_s": times, "outputs": gots}


def _vendor_jobs(
    case: Case, algorithm: str, folder: Path, dataset: Path, sets: dict[str, str], repeat: int, bridge: bool
) -> list[Any]:
    from rkfarm.vendor.bridge import prepare_job, vendor_config
    from rkfarm.vendor.jobs import VendorJob

    model = packaged_model(case.key).path()
    loaded = load_onnx(model, None, [case.size], None, None)
    cfg = RknnConfig.from_kwargs(**_config(case, algorithm))
    name = loaded.model.graph.input[0].name
    jobs: list[Any] = []
    for k in range(repeat):
        jobs.append(
            VendorJob(
                id=f"{case.key}-{algorithm}-vendor-{k}",
                workdir=str(folder / f"{algorithm}-vendor-{k}"),
                model=str(model),
                inputs=[name],
                input_size_list=[case.size],
                config=vendor_config(cfg),
                dataset=str(dataset),
                evaluate=sets if k == repeat - 1 else {},
            )
        )
    if bridge:
        job, _ = prepare_job(f"{case.key}-{algorithm}-bridge", loaded, cfg, True, str(dataset), folder)
        job.evaluate = sets
        job.export = None
        jobs.append(job)
    return jobs


def _absolute_dataset(folder: Path, listing: Path) -> Path:
    out = folder / "dataset-absolute.txt"
    lines = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    out.write_text("".join(f"{(folder / line).resolve()}\n" for line in lines))
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cases = [CASES[key] for key in args.models]
    vendor_jobs: list[Any] = []
    rows: list[dict[str, Any]] = []
    refs: dict[str, dict[str, Outputs]] = {}
    for case in cases:
        folder = work / case.key
        cal_count = args.cal_count or case.cal_count
        eval_count = args.eval_count or case.eval_count
        listing = write_dataset(folder / "calibration", case.calibration(cal_count, 1))
        images = {s: np.stack(case.evaluation(eval_count, seed)) for s, seed in EVAL_SEEDS.items()}
        sets = {}
        for s, ims in images.items():
            sets[s] = str(folder / f"eval-{s}.npy")
            np.save(sets[s], ims)
        refs[case.key] = _reference(case, images)
        for algorithm in args.algorithms:
            log.info("rkfarm: %s %s", case.key, algorithm)
            ours = _rkfarm(case, algorithm, listing, images, args.repeat)
            row: dict[str, Any] = {
                "model": case.key,
                "label": case.label,
                "algorithm": algorithm,
                "task_name": case.task_name,
                "calibration": cal_count,
                "evaluation": eval_count,
                "rkfarm": {
                    "build_s": ours["build_s"],
                    "build_runs_s": ours["build_runs_s"],
                    **{s: fidelity(case, refs[case.key][s], ours["outputs"][s]) for s in images},
                },
            }
            rows.append(row)
            if not args.no_vendor:
                absolute = _absolute_dataset(folder / "calibration", listing)
                vendor_jobs += _vendor_jobs(case, algorithm, folder, absolute, sets, args.repeat, not args.no_bridge)
    toolkit = None
    if vendor_jobs:
        from rkfarm.vendor import run_jobs

        log.info("vendor: %d jobs in one RKNN-Toolkit2 process", len(vendor_jobs))
        vendor = run_jobs(vendor_jobs, work / "vendor")
        toolkit = vendor.toolkit
        for row in rows:
            case = CASES[row["model"]]
            prefix = f"{row['model']}-{row['algorithm']}"
            builds = [r for r in vendor.results if r.id.startswith(f"{prefix}-vendor-")]
            failed = [r for r in builds if not r.ok]
            if failed:
                row["vendor"] = {"error": failed[0].error}
            else:
                row["vendor"] = {
                    "build_s": statistics.median(r.build_s for r in builds),
                    "build_runs_s": [r.build_s for r in builds],
                    **{s: fidelity(case, refs[case.key][s], _first(builds[-1].outputs[s])) for s in EVAL_SEEDS},
                }
            if not args.no_bridge:
                bridged = vendor.result(f"{prefix}-bridge")
                if not bridged.ok:
                    row["bridge"] = {"error": bridged.error}
                else:
                    row["bridge"] = {
                        "build_s": bridged.build_s,
                        "cfg_rkfarm_ranges": len(bridged.replaced),
                        "cfg_toolkit_ranges": len(bridged.kept),
                        **{s: fidelity(case, refs[case.key][s], _first(bridged.outputs[s])) for s in EVAL_SEEDS},
                    }
    return {
        "rkfarm": __version__,
        "vendor_toolkit": toolkit,
        "onnxruntime": ort.__version__,
        "repeat": args.repeat,
        "eval_sets": {s: f"seed {seed}" for s, seed in EVAL_SEEDS.items()},
        "rows": rows,
    }


def _first(outputs: Outputs) -> Outputs:
    """The vendor's stacked first output, back to one array per image (with its batch dim)."""
    return [np.asarray(o, np.float32) for o in outputs[0]]


def _ratio(a: float | None, b: float | None, digits: int = 3) -> str:
    return f"{a / b:.{digits}f}" if a is not None and b else "–"


def _cell(side: dict[str, Any] | None, s: str, key: str, fmt: str = ".4f") -> str:
    if not side:
        return "–"
    if "error" in side:
        return "failed"
    return format(side[s][key], fmt)


def _get(side: dict[str, Any] | None, s: str, key: str) -> float | None:
    return side[s][key] if side and "error" not in side else None


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    out = []
    first = rows[0] if rows else None
    sets = ", ".join(f"{k}: {v}" for k, v in results["eval_sets"].items())
    out.append(
        f"rkfarm {results['rkfarm']} vs RKNN-Toolkit2 {results['vendor_toolkit'] or '(not run)'}, onnxruntime "
        f"{results['onnxruntime']}; build time median of {results['repeat']}; evaluation sets {sets}"
        + ("" if first is None else "; counts per model below")
    )
    for s in results["eval_sets"]:
        title = "evaluation set A" if s == "A" else f"held-out set {s} (never used for tuning)"
        out.append("")
        out.append(f"**{title}**")
        out.append("")
        head = "| model (cal/eval images) | algorithm |"
        if s == "A":
            head += " build s rkfarm | vendor | ratio |"
        head += " cosine rkfarm | vendor | ratio | task measure | rkfarm | vendor | ratio |"
        out.append(head)
        out.append("|" + "---|" * (head.count("|") - 1))
        for r in rows:
            ours, theirs = r["rkfarm"], r.get("vendor")
            line = f"| {r['label']} ({r['calibration']}/{r['evaluation']}) | {r['algorithm']} |"
            if s == "A":
                vt = theirs.get("build_s") if theirs and "error" not in theirs else None
                shown = "–" if vt is None else f"{vt:.2f}"
                line += f" {ours['build_s']:.2f} | {shown} | {_ratio(ours['build_s'], vt, 2)} |"
            cos_ratio = _ratio(ours[s]["cosine"], _get(theirs, s, "cosine"))
            task_ratio = _ratio(ours[s]["task"], _get(theirs, s, "task"))
            line += (
                f" {ours[s]['cosine']:.4f} | {_cell(theirs, s, 'cosine')} | {cos_ratio} |"
                f" {r['task_name']} | {ours[s]['task']:.3f} | {_cell(theirs, s, 'task', '.3f')} | {task_ratio} |"
            )
            out.append(line)
    if any("bridge" in r for r in rows):
        out.append("")
        out.append(
            "**the vendor compiler and simulator with the vendor's ranges vs rkfarm's ranges (`--compiler vendor`)**"
        )
        out.append("")
        head = "| model | algorithm | cfg entries rkfarm/toolkit |"
        for s in results["eval_sets"]:
            head += f" {s}: cosine vendor ranges | rkfarm ranges | {s}: task vendor ranges | rkfarm ranges |"
        out.append(head)
        out.append("|" + "---|" * (head.count("|") - 1))
        for r in rows:
            b, v = r.get("bridge"), r.get("vendor")
            if b is None:
                continue
            entries = "failed" if "error" in b else f"{b['cfg_rkfarm_ranges']}/{b['cfg_toolkit_ranges']}"
            line = f"| {r['label']} | {r['algorithm']} | {entries} |"
            for s in results["eval_sets"]:
                line += f" {_cell(v, s, 'cosine')} | {_cell(b, s, 'cosine')} | {_cell(v, s, 'task', '.3f')} |"
                line += f" {_cell(b, s, 'task', '.3f')} |"
            out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument("--cal-count", type=int, help="calibration images per model (default: per model)")
    parser.add_argument("--eval-count", type=int, help="images per evaluation set (default: per model)")
    parser.add_argument("--repeat", type=int, default=1, help="builds per model and algorithm (median time)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--no-vendor", action="store_true", help="rkfarm only (no vendor toolkit needed)")
    parser.add_argument("--no-bridge", action="store_true", help="skip the vendor compiler with rkfarm's ranges")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the images, models and vendor log here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("rkfarm", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("rkfarm.vendor").setLevel(logging.INFO)
    if not args.no_vendor:
        from rkfarm.vendor import available, setup

        if not available():
            log.info("the vendor toolkit is not set up: making its environment (a few minutes)")
            setup()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vs-vendor-") as tmp:
        work = args.keep or Path(tmp)
        results = run(args, work)
    results["wall_s"] = time.perf_counter() - started
    print(markdown(results))
    print(f"\n(whole run {results['wall_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
