"""REST endpoints for training, one module per area: dataset versions, runs and adapters."""
