"""Dynamic batching of concurrent requests onto one model instance."""

from .scheduler import BatchRunner, Scheduler, WorkItem

__all__ = ["BatchRunner", "Scheduler", "WorkItem"]
