"""Who serves a call: ``gen_ai.provider.name`` for spans and limit rules, from LangChain's own ``ls_provider``
(what LangSmith records) corrected by the client's base URL, because ``ChatOpenAI`` also talks to every
OpenAI-compatible service."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

#: Hosts of OpenAI-compatible endpoints whose requests are billed and rate-limited by someone other than OpenAI.
HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.groq.com": "groq",
    "api.together.xyz": "together",
    "openrouter.ai": "openrouter",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "api.fireworks.ai": "fireworks",
    "api.x.ai": "x_ai",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "api.perplexity.ai": "perplexity",
}
#: LangChain's ls_provider spellings that the GenAI semantic conventions name differently.
SEMCONV = {"google_genai": "gcp.gemini", "google_vertexai": "gcp.vertex_ai", "bedrock": "aws.bedrock",
           "amazon_bedrock": "aws.bedrock", "azure": "azure.ai.openai", "mistralai": "mistral_ai",
           "xai": "x_ai"}
#: Partner packages whose models send their requests through httpx or httpx2 clients (OpenAI's SDK, Anthropic's,
#: and those built like them): a limit can admit each of their requests rather than the whole call.
HTTPX_PACKAGES = frozenset({"langchain_openai", "langchain_anthropic", "langchain_deepseek", "langchain_xai",
                            "langchain_groq", "langchain_mistralai", "langchain_ollama"})
_BASE_URL_FIELDS = ("openai_api_base", "base_url", "anthropic_api_url", "api_base", "endpoint")
_known: dict[tuple[type, str | None], str | None] = {}


def base_url(instance: Any) -> str | None:
    for name in _BASE_URL_FIELDS:
        value = getattr(instance, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def provider_of(instance: Any) -> str | None:
    """The provider of a model, LLM or embeddings object; worked out once per (class, base URL)."""
    url = base_url(instance)
    key = (type(instance), url)
    if key in _known:
        return _known[key]
    found = _from_url(url) or _from_ls_params(instance) or _from_module(type(instance))
    _known[key] = found
    return found


def _from_url(url: str | None) -> str | None:
    if not url:
        return None
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    return HOSTS.get(host)


def _from_ls_params(instance: Any) -> str | None:
    get = getattr(instance, "_get_ls_params", None)
    if get is None:
        return None
    try:
        provider = get().get("ls_provider")
    except Exception:  # a partner's _get_ls_params that needs arguments or state: fall back to the module
        return None
    return SEMCONV.get(provider, provider) if isinstance(provider, str) and provider else None


def _from_module(cls: type) -> str | None:
    # langchain_openai.embeddings.base -> openai; LangChain's own fakes -> None
    package = cls.__module__.split(".")[0]
    if not package.startswith("langchain_") or package in ("langchain_core", "langchain_community"):
        return None
    name = package.removeprefix("langchain_")
    return SEMCONV.get(name, name)


def sends_through_httpx(call: Any) -> bool:
    """The ``hints["http"]`` of model calls: whether the model's requests go through httpx or httpx2, from the
    package that defines its class (a subclass of ``ChatOpenAI`` defined elsewhere counts, through its bases)."""
    cls = type(call.instance)
    found = _httpx.get(cls)
    if found is None:
        found = _httpx[cls] = any(base.__module__.partition(".")[0] in HTTPX_PACKAGES for base in cls.__mro__)
    return found


_httpx: dict[type, bool] = {}
