"""Runs inside the vendor's Python (``rkfarm.vendor.env``), never inside rkfarm: drives RKNN-Toolkit2's own API.

    <vendor python> runner.py JOBS.json RESULTS.json

It imports only the toolkit (with ruamel.yaml, the toolkit's own YAML library), numpy and the standard library:
rkfarm's packages are not installed there. The toolkit's console output (progress bars, warnings) goes to the
``log`` file named in JOBS.json, so the results file is the only channel back to rkfarm. JOBS.json::

    {"log": "/tmp/x/vendor.log",
     "jobs": [{"id": "cls-normal",
               "workdir": "/tmp/x/cls-normal",          # the toolkit writes its files here
               "model": "/tmp/x/model.onnx", "inputs": ["x"], "input_size_list": [[1, 3, 48, 192]],
               "config": {"mean_values": [[127.5, 127.5, 127.5]], ...},   # RKNN.config() keywords
               "quantize": true, "dataset": "/tmp/x/dataset.txt",         # absolute paths inside
               "ranges": null,      # null: the toolkit's own calibration (build); a mapping tensor -> [min, max]:
                                    # hybrid step 1, those ranges written into its .quantization.cfg, step 2
               "evaluate": {"eval": "/tmp/x/eval.npy"},   # name -> N NHWC uint8 images (one-input models)
               "export": "/tmp/x/model.rknn"}]}           # or null

RESULTS.json: ``{"toolkit": "2.5.0", "results": [{"id", "ok", "error", "build_s", "outputs": {name: .npz},
"replaced": [...], "kept": [...]}]}``; a job that fails records its error and the next job still runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

CFG_RANGE_KEYS = ("min", "max")  # the only entries step 2 lets a user change (scale, ori_min, ... are checked)


def _toolkit_version() -> str:
    try:
        from importlib.metadata import version

        return version("rknn-toolkit2")
    except Exception:
        return "unknown"


def _check(code: int, what: str) -> None:
    if code != 0:
        raise RuntimeError(f"RKNN.{what} returned {code} (see the vendor log)")


def _rewrite_cfg(path: str, ranges: dict[str, list[float]]) -> tuple[list[str], list[str]]:
    """Put ``ranges`` into the int8 entries of the step-1 cfg at ``path``; returns (replaced, kept) names."""
    from ruamel.yaml import YAML  # type: ignore[import-not-found]  # the toolkit's own YAML library

    # the safe (plain Python) types: floats written back with repr(), bit for bit. The round-trip loader re-prints
    # floats in a way that may change the last digit, and step 2 then refuses the file ("scale is not allowed
    # to be modified") for entries no one touched
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.representer.sort_base_mapping_type_on_output = False  # keep the toolkit's order
    with open(path, encoding="utf-8") as fh:
        document = yaml.load(fh)
    replaced, kept = [], []
    for name, entry in document["quantize_parameters"].items():
        if str(entry.get("dtype")) != "int8":
            continue
        if name not in ranges:
            kept.append(str(name))
            continue
        lo, hi = ranges[name]
        if len(entry["min"]) != 1:  # rkfarm's activation ranges are per tensor
            kept.append(str(name))
            continue
        entry["min"] = [float(lo)]
        entry["max"] = [float(hi)]
        replaced.append(str(name))
    with open(path, "w", encoding="utf-8") as fh:
        yaml.dump(document, fh)
    return replaced, kept


def _build(rknn: Any, job: dict[str, Any], result: dict[str, Any]) -> None:
    os.makedirs(job["workdir"], exist_ok=True)
    os.chdir(job["workdir"])  # hybrid step 1 writes into the current folder
    started = time.perf_counter()  # build_s: config + load_onnx + build (or both hybrid steps), as rkfarm's
    _check(rknn.config(**job["config"]), "config")
    _check(rknn.load_onnx(job["model"], inputs=job["inputs"], input_size_list=job["input_size_list"]), "load_onnx")
    ranges = job.get("ranges")
    if not job.get("quantize", True):
        _check(rknn.build(do_quantization=False), "build")
    elif ranges is None:
        _check(rknn.build(do_quantization=True, dataset=job["dataset"]), "build")
    else:
        _check(rknn.hybrid_quantization_step1(dataset=job["dataset"]), "hybrid_quantization_step1")
        stem = os.path.splitext(os.path.basename(job["model"]))[0]
        files = [os.path.join(job["workdir"], stem + ext) for ext in (".model", ".data", ".quantization.cfg")]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise RuntimeError(f"hybrid_quantization_step1 wrote no {missing[0]}")
        result["replaced"], result["kept"] = _rewrite_cfg(files[2], ranges)
        result["cfg"] = files[2]
        rknn.release()  # step 2 builds in a fresh object, as the vendor's examples do
        rknn = _new_rknn()
        result["_rknn"] = rknn
        _check(rknn.hybrid_quantization_step2(files[0], files[1], files[2]), "hybrid_quantization_step2")
    result["build_s"] = time.perf_counter() - started


def _new_rknn() -> Any:
    from rknn.api import RKNN  # type: ignore[import-not-found]

    return RKNN(verbose=False)


def _evaluate(rknn: Any, job: dict[str, Any], result: dict[str, Any]) -> None:
    sets = job.get("evaluate") or {}
    if not sets:
        return
    _check(rknn.init_runtime(), "init_runtime")
    outputs: dict[str, str] = {}
    for name, path in sets.items():
        images = np.load(path)
        collected: list[list[np.ndarray[Any, Any]]] = []
        started = time.perf_counter()
        for image in images:
            got = rknn.inference(inputs=[image[np.newaxis]])
            if got is None:
                raise RuntimeError(f"RKNN.inference returned None on {name} (see the vendor log)")
            collected.append([np.asarray(o, np.float32) for o in got])
        result.setdefault("inference_s", {})[name] = time.perf_counter() - started
        out = os.path.join(job["workdir"], f"outputs-{name}.npz")
        np.savez(out, *[np.stack([row[k] for row in collected]) for k in range(len(collected[0]))])
        outputs[name] = out
    result["outputs"] = outputs


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"id": job["id"], "ok": False}
    rknn = _new_rknn()
    result["_rknn"] = rknn
    try:
        _build(rknn, job, result)
        rknn = result["_rknn"]
        if job.get("export"):
            _check(rknn.export_rknn(job["export"]), "export_rknn")
            result["export"] = job["export"]
        _evaluate(rknn, job, result)
        result["ok"] = True
    except Exception as exc:  # the toolkit raises ValueError with its own traceback text in the message
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        result["error"] = lines[-1] if lines else type(exc).__name__
        result["traceback"] = traceback.format_exc()
    finally:
        result.pop("_rknn").release()
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: runner.py JOBS.json RESULTS.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)  # the toolkit prints to both, also from native code
    os.dup2(log, 2)
    results: dict[str, Any] = {"toolkit": _toolkit_version(), "results": []}
    for job in spec["jobs"]:
        print(f"=== rkfarm job {job['id']}", flush=True)
        results["results"].append(run_job(job))
        with open(argv[2] + ".part", "w", encoding="utf-8") as fh:  # what finished, if a later job crashes
            json.dump(results, fh)
    with open(argv[2], "w", encoding="utf-8") as fh:
        json.dump(results, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
