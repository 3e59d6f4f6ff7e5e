"""agentaccel's test kit: real servers for tests (redis-server, an OTLP receiver, an OpenAI-compatible LLM), a
network guard, and pytest fixtures (loaded through the ``pytest11`` entry point ``agentaccel``).

Importing this package imports nothing heavy; the fixtures import what they use.
"""
