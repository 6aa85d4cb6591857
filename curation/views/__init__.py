"""HTML pages and htmx partials for curation, one module per area."""
