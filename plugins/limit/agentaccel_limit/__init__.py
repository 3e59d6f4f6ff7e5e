"""agentaccel-limit (under construction)."""
