"""Run the golden, entire and single models on one sample at a time and hand back that sample's tensors.

Each ``run`` returns the real (float32) values of every probe in the three models for one sample; callers
compare, write and drop them before the next sample, so memory holds one sample's tensors at most.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from rkfarm.analysis.probes import (
    GOLDEN_SUFFIX,
    FloatArray,
    Probe,
    entire_model,
    golden_model,
    golden_name,
    make_probes,
    single_model,
)
from rkfarm.analysis.result import LayerError
from rkfarm.errors import BuildError
from rkfarm.metrics import Array, Means
from rkfarm.quant.saturation import read_clamps
from rkfarm.runtime.sessions import open_session

log = logging.getLogger(__name__)


@dataclass
class SampleValues:
    """One sample's tensors: probe name -> real value, per model."""

    golden: dict[str, Array]  # float model outputs, and the feeds for its inputs
    entire: dict[str, FloatArray]
    single: dict[str, FloatArray]
    clamps: dict[str, tuple[float, float]]  # tensor -> bounds its readers are flat beyond (quant.saturation)

    def reference(self, name: str) -> Array:
        """The float value a quantized tensor is measured against: the golden value, clamped where calibration
        clamped the tensor's range because its readers are flat beyond (there the clamp costs nothing)."""
        value = self.golden[name]
        if name not in self.clamps:
            return value
        lo, hi = self.clamps[name]
        return np.clip(value, lo, hi).astype(value.dtype, copy=False)


class LayerRunner:
    """The three analysis models of one float/quantized pair, opened once, run per sample."""

    def __init__(
        self, float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, tensors: Sequence[str], single: bool = True
    ) -> None:
        self.probes = make_probes(float_model, qdq_model, tensors)
        self.inputs = [
            i.name for i in float_model.graph.input if i.name not in {t.name for t in float_model.graph.initializer}
        ]
        self.clamps = read_clamps(qdq_model)
        self.entire = entire_model(qdq_model, self.probes)
        self._golden = open_session(golden_model(float_model, self.probes), "float (golden)")
        self._entire = open_session(self.entire, "quantized")
        self._single = (
            open_session(single_model(qdq_model, float_model, self.probes), "single-layer") if single else None
        )
        log.debug("accuracy analysis: %d probes", len(self.probes))

    def run(self, feeds: Sequence[Array]) -> SampleValues:
        """All three models on one sample (preprocessed model inputs, in input order)."""
        inputs = dict(zip(self.inputs, feeds))
        names = [o.name for o in self._golden.get_outputs()]
        golden = {name: value for name, value in zip(names, self._run(self._golden, names, inputs))}
        golden.update({name: inputs[name] for name in self.inputs})
        entire = self.read(self._run(self._entire, self.exposed, inputs), inputs)
        single: dict[str, FloatArray] = {}
        if self._single is not None:
            wanted = [i.name for i in self._single.get_inputs()]
            feeds_single = {name: self._golden_feed(name, golden, inputs) for name in wanted}
            single = self.read(self._run(self._single, self.exposed, feeds_single), inputs)
        return SampleValues(golden, entire, single, self.clamps)

    @property
    def exposed(self) -> list[str]:
        return [p.exposed for p in self.probes if p.quantized is not None or not p.is_input]

    def read(self, outputs: Sequence[Array], inputs: dict[str, Array]) -> dict[str, FloatArray]:
        """Real values of every probe from the exposed outputs (float model inputs come from the feeds)."""
        raw = dict(zip(self.exposed, outputs))
        values: dict[str, FloatArray] = {}
        for p in self.probes:
            values[p.name] = p.value(raw[p.exposed] if p.exposed in raw else inputs[p.name])
        return values

    @staticmethod
    def _golden_feed(name: str, golden: dict[str, Array], inputs: dict[str, Array]) -> Array:
        if name in inputs:
            return inputs[name]
        return golden[name.removesuffix(GOLDEN_SUFFIX)]

    @staticmethod
    def _run(session: Any, names: Sequence[str], feeds: dict[str, Array]) -> list[Array]:
        try:
            return list(session.run(list(names), feeds))
        except Exception as exc:
            raise BuildError(f"ONNX Runtime failed during accuracy analysis: {exc}") from None


def layer_errors(runner: LayerRunner, samples: Iterable[Sequence[Array]]) -> list[LayerError]:
    """Entire and single errors of every probe, averaged over ``samples`` (one sample in memory at a time)."""
    from tqdm import tqdm

    entire, single = Means(), Means()
    count = 0
    for feeds in tqdm(samples, desc="analysing layers", unit="sample", leave=False, disable=None):
        values = runner.run(feeds)
        for p in runner.probes:
            entire.add(p.name, values.reference(p.name), values.entire[p.name])
            if values.single:
                single.add(p.name, values.reference(p.name), values.single[p.name])
        count += 1
        del values
    if not count:
        raise BuildError("accuracy analysis needs at least one sample")
    return [
        LayerError(
            p.index, p.op, p.name, *entire.get(p.name), *(single.get(p.name) if p.name in single else (1.0, 0.0))
        )
        for p in runner.probes
    ]


__all__ = ["LayerRunner", "Probe", "SampleValues", "golden_name", "layer_errors"]
