"""The agentaccel-limit plugin's hook implementations (under construction)."""
