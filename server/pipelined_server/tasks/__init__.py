"""Task adapters: proto <-> pipeline arguments and outputs, one module per task family."""
