"""Installs agentaccel's network guard in a subprocess a test starts (the ``subprocess_env`` fixture puts this
folder first on PYTHONPATH). Refused attempts are printed to stderr and make the process exit with status 97."""

from __future__ import annotations

import atexit
import os
import sys

from agentaccel._bootstrap import chain_sitecustomize
from agentaccel.testing.netguard import Guard

_guard = Guard()
_guard.install()


def _report() -> None:
    if _guard.attempts:
        sys.stderr.write("agentaccel network guard refused: " + "; ".join(_guard.attempts) + "\n")
        sys.stderr.flush()
        os._exit(97)


atexit.register(_report)
chain_sitecustomize(os.path.dirname(__file__))
