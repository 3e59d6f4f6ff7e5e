"""The framework's base classes: what an adapter patches."""

from __future__ import annotations


class Base:
    """A base class whose methods an adapter patches: a plain method, a classmethod and a staticmethod."""

    def run(self, x: int) -> str:
        return f"run:{x}"

    async def arun(self, x: int) -> str:
        return f"arun:{x}"

    @classmethod
    def create(cls, x: int) -> str:
        return f"create:{cls.__name__}:{x}"

    @staticmethod
    def helper(x: int) -> str:
        return f"helper:{x}"


def tool(x: int) -> str:
    """A module-level function an adapter patches."""
    return f"tool:{x}"


class Special(Base):
    """A subclass overriding ``run`` and calling ``super().run``."""

    def run(self, x: int) -> str:
        return "special:" + super().run(x)


#: A class implemented in C, whose attributes cannot be replaced.
Number = int
