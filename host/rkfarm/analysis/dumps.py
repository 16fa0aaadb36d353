"""Per-tensor dumps of one analysed sample: ``golden/``, ``simulator/`` (and ``runtime/``) under the output folder.

Each tensor is written twice: ``<file>.txt`` with one value per line (``%.6f``, the flattened tensor in C order,
for diff tools and the vendor's habits) and ``<file>.npy`` with its shape. Tensor names may hold characters a
file name cannot (``/``, ``:``), so files are named ``<index>_<name with such characters replaced>``;
``map_name_to_file.txt`` lists ``<file> <tensor name>`` per line, in analysis order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rkfarm.analysis.metrics import Array
from rkfarm.analysis.probes import Probe
from rkfarm.errors import RkfarmError

MAP_FILE = "map_name_to_file.txt"
FOLDERS = ("golden", "simulator", "runtime")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DUMP_FILE = re.compile(r"^\d{4}_.*\.(txt|npy)$")
MAX_STEM = 96


def file_stem(probe: Probe) -> str:
    return f"{probe.index:04d}_{_UNSAFE.sub('_', probe.name)[:MAX_STEM]}"


class DumpWriter:
    """Writes one folder of tensors per model under ``root``, and the name map once."""

    def __init__(self, root: Path, probes: Sequence[Probe]) -> None:
        self.root = root
        self.stems = {p.name: file_stem(p) for p in probes}
        try:
            root.mkdir(parents=True, exist_ok=True)
            for folder in FOLDERS:  # a previous analysis's dumps would mix with this one's
                if (root / folder).is_dir():
                    for old in (root / folder).iterdir():
                        if _DUMP_FILE.match(old.name):
                            old.unlink()
            lines = "".join(f"{self.stems[p.name]} {p.name}\n" for p in probes)
            (root / MAP_FILE).write_text(lines, encoding="utf-8")
        except OSError as exc:
            raise RkfarmError(f"cannot write accuracy analysis files in {root}: {exc}") from None

    def write(self, folder: str, values: Mapping[str, Array]) -> Path:
        """``values`` (probe name -> array) into ``root/folder``; returns the folder."""
        out = self.root / folder
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, value in values.items():
                stem = self.stems.get(name)
                if stem is None:
                    continue
                array = np.ascontiguousarray(value, np.float32)
                np.save(out / f"{stem}.npy", array)
                flat = array.ravel().tolist()
                (out / f"{stem}.txt").write_text(("%.6f\n" * len(flat)) % tuple(flat), encoding="ascii")
        except OSError as exc:
            raise RkfarmError(f"cannot write tensor dumps in {out}: {exc}") from None
        return out


def read_map(root: Path) -> dict[str, str]:
    """``map_name_to_file.txt`` back as tensor name -> file stem."""
    entries = {}
    for line in (root / MAP_FILE).read_text(encoding="utf-8").splitlines():
        stem, _, name = line.partition(" ")
        if stem:
            entries[name] = stem
    return entries
