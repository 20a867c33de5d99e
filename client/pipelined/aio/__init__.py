"""asyncio twins of the client and pipelines."""

from .client import Client

__all__ = ["Client"]
