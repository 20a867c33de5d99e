"""The remote pipelines: one base (base.py), one module per task family, and the task registry."""
