"""Route handlers, one module per resource of API.md."""
