"""Redis adapters: the tenants' message streams."""
