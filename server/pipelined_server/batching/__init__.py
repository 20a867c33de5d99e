"""Dynamic batching of concurrent requests onto one model instance."""

from .scheduler import BatchRunner, ReplicaCall, Scheduler, WorkItem, gather_or_cancel

__all__ = ["BatchRunner", "ReplicaCall", "Scheduler", "WorkItem", "gather_or_cancel"]
