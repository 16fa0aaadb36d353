"""What accuracy analysis measures: per layer, the entire and single errors (and the runtime's, with a board)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LayerError:
    """The errors of one analysed tensor (a layer's output), averaged over the analysed samples.

    ``entire``: the quantized model run end to end against the float model (golden); errors accumulate.
    ``single``: the layer alone — its int8 weights and output quantization — fed the golden values of its inputs.
    ``runtime``: the quantized model on a board agent against golden; ``runtime_sim``: against the simulator.
    ``cos`` is the cosine similarity of the flattened tensors (1: same direction), ``euc`` the euclidean
    distance (0: identical), in the tensor's own units.
    """

    index: int
    op: str
    name: str
    entire_cos: float
    entire_euc: float
    single_cos: float
    single_euc: float
    runtime_cos: float | None = None
    runtime_euc: float | None = None
    runtime_sim_cos: float | None = None
    runtime_sim_euc: float | None = None


@dataclass
class AnalysisResult:
    """Every analysed layer in graph order, and where the files went."""

    layers: list[LayerError]
    samples: int
    model_name: str = ""
    runtime: str | None = None  # where the runtime columns were measured, if any
    output_dir: Path | None = None
    elapsed_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)  # "error_analysis", "report", "golden", ...

    def worst(self, count: int = 10) -> list[LayerError]:
        """The layers that add the most error by themselves: lowest single cosine first (then entire)."""
        ranked = sorted(self.layers, key=lambda e: (e.single_cos, e.entire_cos, e.index))
        return ranked[: max(0, count)]

    def layer(self, name: str) -> LayerError:
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "samples": self.samples,
            "runtime": self.runtime,
            "output_dir": str(self.output_dir) if self.output_dir else None,
            "elapsed_s": self.elapsed_s,
            "files": {k: str(v) for k, v in self.files.items()},
            "layers": [asdict(e) for e in self.layers],
        }
