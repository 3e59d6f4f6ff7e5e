"""Start-up hooks: the sitecustomize that ``agentaccel run`` puts on PYTHONPATH."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys


def chain_sitecustomize(folder: str) -> None:
    """Import the next ``sitecustomize`` on the path after the one in ``folder``, as if ours were not there: a
    virtualenv's or a distribution's start-up code must still run."""
    here = os.path.abspath(folder)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    mine = sys.modules.pop("sitecustomize", None)
    try:
        if importlib.util.find_spec("sitecustomize") is not None:
            importlib.import_module("sitecustomize")
        elif mine is not None:
            sys.modules["sitecustomize"] = mine
    finally:
        sys.path[:] = saved
