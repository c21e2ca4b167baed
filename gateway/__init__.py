"""enapter-gateway: a local, open re-implementation of the Enapter Gateway."""

__version__ = "0.1.0"
