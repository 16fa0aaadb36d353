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


def normalize_platform(name: str) -> str | None:
    """Lower-cased known platform name, or None if it is not one."""
    key = name.strip().lower()
    return key if key in NPU_CORES else None
