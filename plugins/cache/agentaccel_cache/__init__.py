"""agentaccel-cache (under construction)."""
