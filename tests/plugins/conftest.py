"""Shared by the plugin test suites: nothing yet beyond agentaccel's pytest plugin fixtures."""
