"""Exceptions agentaccel raises on purpose.

Anything deriving from :class:`AgentAccelError` that a middleware raises reaches the caller: that is how a
limiter's queue timeout or a configuration mistake is reported. Any other exception raised inside a plugin is a
bug in that plugin: it is logged once, counted, and the user's call goes on without that middleware.
"""

from __future__ import annotations


class AgentAccelError(Exception):
    """Base class of the errors agentaccel raises deliberately; each message says what to change."""


class ConfigError(AgentAccelError, ValueError):
    """The configuration is invalid: the message names the key, its section and what was expected."""


class PluginError(AgentAccelError):
    """A plugin broke the hook contract in a way that cannot be worked around (e.g. a middleware order cycle)."""
