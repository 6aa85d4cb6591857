"""Training pages, one module per area: dataset versions, runs and adapters."""
