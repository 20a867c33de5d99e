"""pipelined server: hosts transformers pipelines behind gRPC."""

__version__ = "0.1.0"
