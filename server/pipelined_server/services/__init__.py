"""gRPC servicers: thin proto-in, proto-out layers over the task adapters."""
