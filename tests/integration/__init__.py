"""Integration tests: adapters against real servers started by ``tests.servers``."""
