"""Dynamic batching of concurrent requests onto one model instance."""

from .abandon import Abandoned, is_abandoned, raise_if_abandoned
from .scheduler import BatchRunner, ReplicaCall, Scheduler, WorkItem, gather_or_cancel

__all__ = [
    "Abandoned",
    "is_abandoned",
    "raise_if_abandoned",
    "BatchRunner",
    "ReplicaCall",
    "Scheduler",
    "WorkItem",
    "gather_or_cancel",
]
