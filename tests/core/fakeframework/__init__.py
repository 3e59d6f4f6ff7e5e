"""A tiny stand-in for an agent framework, patched by the adapter tests (tests/core/test_adapter.py)."""
