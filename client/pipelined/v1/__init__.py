"""Generated from protos/pipelined/v1 by scripts/generate_protos.py. Do not edit."""
