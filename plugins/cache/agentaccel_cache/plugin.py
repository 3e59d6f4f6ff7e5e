"""The agentaccel-cache plugin's hook implementations (under construction)."""
