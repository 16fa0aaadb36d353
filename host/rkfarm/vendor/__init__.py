"""The vendor's RKNN-Toolkit2, driven from rkfarm: its side environment, and its compiler as a bridge to the NPU.

* ``env``: find the vendor python (``RKFARM_VENDOR_PYTHON``, ``RKFARM_VENDOR_ENV`` or the cache folder) and make
  its environment (``rkfarm vendor setup``);
* ``runner``: the script the vendor python runs (the toolkit and numpy only; rkfarm is not importable there),
  fed and read through JSON files by ``jobs``;
* ``bridge``: ``build_for("vendor", ...)`` behind ``RKNN.build(..., compiler='vendor')`` and ``rkfarm build
  --compiler vendor``, and ``compile()``: rkfarm's calibration, compiled by the toolkit into a ``.rknn``.
"""

from rkfarm.vendor.bridge import COMPILERS, VendorBuild, build_for, compile, vendor_ranges
from rkfarm.vendor.env import MISSING, VendorEnvError, VendorStatus, available, setup, status, vendor_python
from rkfarm.vendor.jobs import VendorJob, VendorResult, VendorRun, run_jobs

__all__ = [
    "COMPILERS",
    "MISSING",
    "VendorBuild",
    "VendorEnvError",
    "VendorJob",
    "VendorResult",
    "VendorRun",
    "VendorStatus",
    "available",
    "build_for",
    "compile",
    "run_jobs",
    "setup",
    "status",
    "vendor_python",
    "vendor_ranges",
]
