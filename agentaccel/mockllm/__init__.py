"""An OpenAI-compatible LLM provider on a real local socket, for tests, benchmarks and demos.

``MockLLM`` serves in background threads of the current process; ``MockLLMProcess`` runs the
same server as ``python -m agentaccel.mockllm`` in a child process. Both answer Chat
Completions (plain, streamed, tool calls), embeddings and the model list deterministically,
and enforce provider limits (latency, max concurrency, requests per minute) with exact counters.
"""

from .config import Config, MockLLMSettings, Script, parse_script
from .process import MockLLMProcess
from .server import COUNTER_NAMES, MockLLM

__all__ = [
    "COUNTER_NAMES",
    "Config",
    "MockLLM",
    "MockLLMProcess",
    "MockLLMSettings",
    "Script",
    "parse_script",
]
