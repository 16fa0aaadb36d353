"""Per-tensor dumps of one analysed sample, laid out as the vendor's ``accuracy_analysis`` lays them out.

``<folder>/<file>.txt`` holds one value per line (``%.6f``, the flattened tensor in C order) and
``<folder>/npy/<file>.npy`` the array with its shape, for ``folder`` in ``golden``, ``simulator`` (and
``runtime`` with a board). ``<file>`` is the tensor name with the characters the vendor replaces (``/ : . ;``,
and, for safety, control characters) turned into ``_``, so a script written for the vendor finds
``./snapshot/golden/<tensor>.txt`` where it expects it. Where the vendor lets two tensors overwrite each
other's file (``a/b`` and ``a_b``), rkfarm gives the name that needed no replacement its plain file and the
other a ``_1`` suffix; overlong names are shortened with a ``__N`` suffix. ``map_name_to_file.txt`` lists
every tensor and its file in analysis (graph) order, in the vendor's two fixed-width columns.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rkfarm.analysis.probes import Probe
from rkfarm.errors import RkfarmError
from rkfarm.metrics import Array

log = logging.getLogger(__name__)

MAP_FILE = "map_name_to_file.txt"
FOLDERS = ("golden", "simulator", "runtime")
NPY_FOLDER = "npy"
_REPLACED = re.compile(r"[/:.;\x00-\x1f\x7f]")
MAX_STEM_CHARS = 128  # longer names keep their first 125 characters and get a __N suffix
MAX_STEM_BYTES = 240  # file systems allow 255 bytes per name, with room for ".txt"
_MIN_COLUMN = 34  # the vendor's map file: columns at least this wide, else the longest name + 10


def _shorten(stem: str, counter: int) -> str:
    suffix = f"__{counter}"
    keep = stem[: MAX_STEM_CHARS - len(suffix)]
    while len((keep + suffix).encode()) > MAX_STEM_BYTES:
        keep = keep[:-1]
    return keep + suffix


def file_stems(names: Sequence[str]) -> dict[str, str]:
    """Tensor name -> file stem, unique within one analysis (see the module docstring)."""
    wanted = {name: _REPLACED.sub("_", name) for name in names}
    stems: dict[str, str] = {}
    taken: set[str] = set()
    long_count = 0
    # names already safe first: ``a_b`` keeps ``a_b.txt`` even when ``a/b`` comes before it
    for name in sorted(names, key=lambda n: wanted[n] != n):
        stem = wanted[name]
        if len(stem) > MAX_STEM_CHARS or len(stem.encode()) > MAX_STEM_BYTES:
            stem = _shorten(stem, long_count)
            long_count += 1
        base, k = stem, 1
        while stem in taken:
            stem = f"{base}_{k}"
            k += 1
        taken.add(stem)
        stems[name] = stem
    return {name: stems[name] for name in names}


def format_map(stems: Mapping[str, str]) -> str:
    """``map_name_to_file.txt``: a header, a rule, then ``name  file.txt`` in two columns of equal width."""
    width = max([_MIN_COLUMN, *(len(name) + 10 for name in stems)])
    lines = ["layer_name".ljust(width) + "file_name".ljust(width), "-" * (2 * width)]
    lines += [name.ljust(width) + f"{stem}.txt".ljust(width) for name, stem in stems.items()]
    return "".join(line + "\n" for line in lines)


def parse_map(text: str) -> dict[str, str]:
    """The map file back as tensor name -> file stem (names may hold spaces: columns are fixed width)."""
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].startswith("layer_name") or "file_name" not in lines[0]:
        raise RkfarmError(f"not a {MAP_FILE}: the first line should name the layer_name and file_name columns")
    column = lines[0].index("file_name")
    entries = {}
    for line in lines[2:]:
        name, file = line[:column].rstrip(), line[column:].strip()
        if name and file:
            entries[name] = file.removesuffix(".txt")
    return entries


def read_map(root: Path) -> dict[str, str]:
    """``root/map_name_to_file.txt`` as tensor name -> file stem."""
    return parse_map((root / MAP_FILE).read_text(encoding="utf-8"))


class DumpWriter:
    """Writes the name map once and, when ``dump`` is set, one folder of tensors per model under ``root``."""

    def __init__(self, root: Path, probes: Sequence[Probe], dump: bool = True) -> None:
        self.root = root
        self.dump = dump
        self.stems = file_stems([p.name for p in probes])
        renamed = [f"{name} -> {stem}" for name, stem in self.stems.items() if stem != _REPLACED.sub("_", name)]
        if renamed:  # too long, or the vendor would have let them overwrite another tensor's file
            log.warning("tensors dumped under another file name than the vendor's: %s", ", ".join(renamed))
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._remove_previous()
            (root / MAP_FILE).write_text(format_map(self.stems), encoding="utf-8")
        except OSError as exc:
            raise RkfarmError(f"cannot write accuracy analysis files in {root}: {exc}") from None

    def _remove_previous(self) -> None:
        """A previous analysis's dumps (named in its map) would mix with this one's."""
        try:
            old = read_map(self.root).values()
        except (OSError, RkfarmError, UnicodeDecodeError):
            return
        for folder in FOLDERS:
            for stem in old:
                for path in (self.root / folder / f"{stem}.txt", self.root / folder / NPY_FOLDER / f"{stem}.npy"):
                    path.unlink(missing_ok=True)

    def write(self, folder: str, values: Mapping[str, Array]) -> Path | None:
        """``values`` (probe name -> array) into ``root/folder``; returns the folder (None: not dumping)."""
        if not self.dump:
            return None
        out = self.root / folder
        try:
            (out / NPY_FOLDER).mkdir(parents=True, exist_ok=True)
            for name, value in values.items():
                stem = self.stems.get(name)
                if stem is None:
                    continue
                array = np.ascontiguousarray(value, np.float32)
                np.save(out / NPY_FOLDER / f"{stem}.npy", array)
                flat = array.ravel().tolist()
                (out / f"{stem}.txt").write_text(("%.6f\n" * len(flat)) % tuple(flat), encoding="ascii")
        except OSError as exc:
            raise RkfarmError(f"cannot write tensor dumps in {out}: {exc}") from None
        return out
