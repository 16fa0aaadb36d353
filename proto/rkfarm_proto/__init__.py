"""Contracts shared by the rkfarm host and agent: wire types, the model package format, tensor codec.

Nothing here depends on host-only packages; a board imports it to run the agent.
"""

from rkfarm_proto.errors import ForeignFormatError, InputError, PackageError, RkfarmError

__all__ = ["ForeignFormatError", "InputError", "PackageError", "RkfarmError"]
