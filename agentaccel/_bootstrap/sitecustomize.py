"""Enables agentaccel at interpreter start-up for ``agentaccel run -- python app.py``.

``agentaccel run`` validated the configuration before starting the program, so a failure here is unexpected:
it is reported on stderr and the program exits with status 2 rather than running unaccelerated unnoticed.
(``os._exit``: ``sys.exit`` during site import is a fatal interpreter error with status 1.)
"""

from __future__ import annotations

import os
import sys

from agentaccel._bootstrap import chain_sitecustomize

chain_sitecustomize(os.path.dirname(__file__))

try:
    import agentaccel

    agentaccel.enable()
except Exception as exc:
    sys.stderr.write(f"agentaccel run: could not enable agentaccel: {exc}\n")
    sys.stderr.flush()
    os._exit(2)
