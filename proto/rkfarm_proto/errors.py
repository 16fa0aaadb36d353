"""The exception root shared by every rkfarm package, and the errors the contracts themselves raise."""

from __future__ import annotations


class RkfarmError(Exception):
    """Root of every error rkfarm raises on purpose; the message says what to do about it."""


class PackageError(RkfarmError):
    """A model package is malformed, truncated, tampered with, or of a version this code cannot read."""


class ForeignFormatError(PackageError):
    """The file is a model in another format (a vendor .rknn, an ONNX file) where a package was expected."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class InputError(RkfarmError, ValueError):
    """An inference input has the wrong count, shape or dtype for the model."""
