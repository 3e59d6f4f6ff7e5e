"""A package-style re-export of a module-level function, as ``langchain.agents`` re-exports ``create_agent``."""

from fakeframework.models import tool

__all__ = ["tool"]
