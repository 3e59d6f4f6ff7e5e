"""agentaccel adapter for LangChain and LangGraph: chat models, LLMs, embeddings, tools, graphs and agents run
through agentaccel's pipeline (spans, cache, limits). Installed, it is found through its entry point; nothing
to import. See docs/langchain.md."""

from agentaccel_langchain.adapter import LangChainAdapter

__all__ = ["LangChainAdapter"]
