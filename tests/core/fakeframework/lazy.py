"""A framework module imported only after ``agentaccel.enable()``: patched by the post-import hook."""

from __future__ import annotations


class Lazy:
    def run(self, x: int) -> int:
        return x * 2
