"""Platform names both sides agree on: what config(target_platform=...) takes and what an agent reports."""

from __future__ import annotations

# Rockchip SoCs with an NPU that RKNN-Toolkit2 2.x targets, and their NPU core counts.
NPU_CORES: dict[str, int] = {
    "rk3588": 3,
    "rk3576": 2,
    "rk3568": 1,
    "rk3566": 1,
    "rk3562": 1,
    "rk2118": 1,
    "rv1103": 1,
    "rv1103b": 1,
    "rv1106": 1,
    "rv1106b": 1,
    "rv1126b": 1,
}
PLATFORMS: tuple[str, ...] = tuple(NPU_CORES)
UNKNOWN = "unknown"  # an agent on a machine that is not a Rockchip board (a PC, a container)

# The vendor's NPU core masks (RKNN.NPU_CORE_*, rknn_core_mask in librknnrt): bits of the cores to run on.
NPU_CORE_AUTO = 0x0
NPU_CORE_0 = 0x1
NPU_CORE_1 = 0x2
NPU_CORE_2 = 0x4
NPU_CORE_0_1 = 0x3
NPU_CORE_0_1_2 = 0x7
NPU_CORE_ALL = 0xFFFF
CORE_MASKS = frozenset({NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2, NPU_CORE_0_1, NPU_CORE_0_1_2, NPU_CORE_ALL})


def cores_in_mask(core_mask: int) -> int:
    """The number of cores a mask names by its bits (0 for ``NPU_CORE_AUTO``)."""
    return bin(core_mask & NPU_CORE_ALL).count("1")


def normalize_platform(name: str) -> str | None:
    """Lower-cased known platform name, or None if it is not one."""
    key = name.strip().lower()
    return key if key in NPU_CORES else None
