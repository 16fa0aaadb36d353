"""``rknn.api.custom_op`` spelled ``rkfarm.api.custom_op``: the same names as ``rkfarm.custom_op``."""

from rkfarm.custom_op import get_node_attr

__all__ = ["get_node_attr"]
