"""Hybrid quantization step 1's files, and step 2 building from them alone (in a fresh ``RKNN()``).

Step 1 writes three files named after the source model (``{name}`` is its file stem):

* ``{name}.model`` — the prepared float graph as ONNX: the graph after rkfarm's passes (simplified, opset 13,
  BatchNorm and constant scales folded), which is the graph the parameters apply to and whose tensor names
  the cfg uses. Its weights live in the .data file (ONNX external data). ``metadata_props["rkfarm.hybrid"]``
  holds, as JSON, everything else step 2 needs: the ``config()`` values, the source model's name, sha256 and
  framework, the quantizer options, the calibration sample count, and the .data file's sha256.
* ``{name}.data`` — the weights: the tensors' bytes back to back; the .model records each one's offset and
  length. A .data that is not the one written with the .model is refused (sha256).
* ``{name}.quantization.cfg`` — the parameters of every int8 tensor, and ``custom_quantize_layers`` (the
  proposal, ``custom_hybrid``'s layers, or ``{}``) for the user to edit.

Step 2 restores the config, rebuilds the int8 plan from the graph (deterministic), takes the parameters from
the cfg (edited ranges honoured, see ``hybrid.cfg_parameters``), keeps the listed layers in float and makes
the package. Tensors the cfg gives no parameters for stay float too, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from rkfarm import __version__
from rkfarm.config import RknnConfig
from rkfarm.errors import BuildError, ModelLoadError
from rkfarm.frontends import LoadedGraph
from rkfarm.quant.config_file import read_quant_cfg, write_quant_cfg
from rkfarm.quant.hybrid import cfg_parameters, expand_groups, float_plan, resolve_layers
from rkfarm.quant.pipeline import QuantOptions, QuantResult, finish
from rkfarm.quant.plan import make_plan
from rkfarm.quant.qdq import Calibration, apply_qdq, parameter_table, table_from_qdq

log = logging.getLogger(__name__)

METADATA_KEY = "rkfarm.hybrid"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class HybridFiles:
    model: Path
    data: Path
    cfg: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_step1(
    result: QuantResult, loaded: LoadedGraph, cfg: RknnConfig, folder: Path, name: str | None = None
) -> HybridFiles:
    """Write ``{name}.model``, ``{name}.data`` and ``{name}.quantization.cfg`` into ``folder``."""
    stem = name or Path(loaded.source_name).stem or "model"
    files = HybridFiles(folder / f"{stem}.model", folder / f"{stem}.data", folder / f"{stem}.quantization.cfg")
    cal = result.calibration
    full = table_from_qdq(apply_qdq(cal.model, cal.plan, cal.table))  # every int8 tensor, float layers too
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.data.unlink(missing_ok=True)  # onnx appends to an existing data file
        model = onnx.ModelProto()
        model.CopyFrom(cal.model)
        for k, tensor in enumerate(model.graph.initializer):  # onnx moves only raw_data into the .data file
            if not tensor.HasField("raw_data") and tensor.data_type != onnx.TensorProto.STRING:
                model.graph.initializer[k].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
        onnx.save_model(
            model,
            str(files.model),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=files.data.name,
            size_threshold=0,
        )
        files.data.touch()  # a model without weights still gets its (empty) .data
        metadata = {
            "format": FORMAT_VERSION,
            "producer": f"rkfarm {__version__}",
            "source": {"name": loaded.source_name, "sha256": loaded.source_sha256, "framework": loaded.framework},
            "config": {k: v for k, v in asdict(cfg).items() if k != "extras"},
            "options": asdict(result.options),
            "calibration_samples": cal.samples,
            "clamps": {t: list(bounds) for t, bounds in sorted(cal.plan.clamps.items())},
            "data_sha256": _sha256(files.data),
        }
        model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
        files.model.write_bytes(model.SerializeToString())
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot write the hybrid quantization files in {folder}: {exc}") from None
    custom = {t: "float16" for t in result.float_layers}
    write_quant_cfg(files.cfg, full, custom)
    log.info("hybrid step 1: wrote %s, %s and %s", files.model, files.data, files.cfg)
    return files


def _read_model(model_path: Path, data_path: Path) -> tuple[onnx.ModelProto, dict[str, Any]]:
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except FileNotFoundError:
        raise ModelLoadError(f"{model_path}: no such file (the .model from hybrid_quantization_step1)") from None
    except (DecodeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{model_path}: not an ONNX .model from hybrid_quantization_step1: {exc}") from None
    entry = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if entry is None:
        raise ModelLoadError(f"{model_path}: has no rkfarm metadata; write it with hybrid_quantization_step1")
    meta: dict[str, Any] = json.loads(entry)
    if meta.get("format") != FORMAT_VERSION:
        raise ModelLoadError(f"{model_path}: hybrid file format {meta.get('format')!r} is not {FORMAT_VERSION}")
    if not data_path.is_file():
        raise ModelLoadError(f"{data_path}: no such file (the .data written with {model_path.name})")
    if _sha256(data_path) != meta["data_sha256"]:
        raise ModelLoadError(f"{data_path}: is not the .data written with {model_path} (its sha256 differs)")
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for item in tensor.external_data:
                if item.key == "location":
                    item.value = data_path.name
    try:
        onnx.load_external_data_for_model(model, str(data_path.parent))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{data_path}: cannot read the weights: {exc}") from None
    return model, meta


def load_step2(
    model_path: str | os.PathLike[str], data_path: str | os.PathLike[str], cfg_path: str | os.PathLike[str]
) -> tuple[LoadedGraph, RknnConfig, QuantResult]:
    """The loaded graph, the restored config and the quantized result for step 1's files and a cfg."""
    model, meta = _read_model(Path(model_path), Path(data_path))
    source = meta["source"]
    loaded = LoadedGraph(model, source["name"], source["sha256"], source["framework"])
    cfg = RknnConfig.from_kwargs(**meta["config"])
    options = QuantOptions(**meta["options"])
    config = read_quant_cfg(cfg_path)
    plan = make_plan(model, options.fuse, options.per_channel)
    # where step 1's activations are flat (saturation): a fact of the model, whatever ranges the cfg now gives
    plan.clamps = {t: (float(lo), float(hi)) for t, (lo, hi) in meta.get("clamps", {}).items() if t in plan.group_of}
    given, _ = cfg_parameters(config, plan)
    floats = resolve_layers(
        model,
        plan,
        config.float_layers(),
        lambda name: config.where("custom_quantize_layers", name),
        "custom_quantize_layers: tensor",
    )
    covered = set(expand_groups(plan, floats))
    missing = [t for t in plan.activations if t not in given and t not in covered]
    if missing:
        outputs = {o.name for o in model.graph.output}
        inner = [t for t in missing if t not in outputs]
        (log.warning if inner else log.info)(
            "%s gives no parameters for %d tensor(s) (%s): kept in float",
            config.source,
            len(missing),
            ", ".join(missing[:5]),
        )
    floats = [*floats, *missing]
    table = parameter_table(model, float_plan(model, plan, floats), {}, given=given)
    calibration = Calibration(model, plan, table, int(meta.get("calibration_samples", 0)))
    return loaded, cfg, finish(calibration, options, floats)
