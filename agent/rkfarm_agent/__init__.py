"""rkfarm board agent: a small gRPC daemon that runs model packages and reports timing and memory."""

__version__ = "0.1.0"
