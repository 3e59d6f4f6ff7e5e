"""Token weights for ``tokens_per_minute``: estimated from the normalized request before the call, then the
usage the call reports replaces the estimate in the rule's window."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentaccel import Call, Outcome, StreamOutcome

#: Characters per token of English text with OpenAI's tokenizers; a rough figure is enough, the usage corrects it.
CHARS_PER_TOKEN = 4
#: Completion tokens assumed when the request sets no max_tokens.
DEFAULT_COMPLETION = 256


def estimate(call: Call) -> int:
    """Prompt characters / 4 plus the completion budget (max_tokens, or a default)."""
    request = call.request
    prompt = request.get("messages", request.get("input", request.get("prompt", request.get("arguments"))))
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, default=str, ensure_ascii=False)
    completion = request.get("max_tokens") or request.get("max_completion_tokens") or DEFAULT_COMPLETION
    return len(text) // CHARS_PER_TOKEN + (completion if isinstance(completion, int) else DEFAULT_COMPLETION)


def used(call: Call, outcome: Outcome) -> int | None:
    """Total tokens the call reports, from the adapter's ``describe`` (``gen_ai.usage.*``) or a ``usage``
    field (an OpenAI response object, or its dict); None when it reports none."""
    # a stream's usage comes in its last chunk
    result = outcome.last if isinstance(outcome, StreamOutcome) else outcome.value
    if result is None:
        return None
    describe = call.target.describe
    if describe is not None:
        try:
            attributes = describe(result)
        except Exception:  # the adapter's describe() fails on this result: fall back to looking for usage
            attributes = {}
        total = _int(attributes.get("gen_ai.usage.input_tokens")) + _int(attributes.get("gen_ai.usage.output_tokens"))
        if total:
            return total
    usage = result.get("usage") if isinstance(result, Mapping) else getattr(result, "usage", None)
    if usage is None:
        return None
    total_tokens = usage.get("total_tokens") if isinstance(usage, Mapping) else getattr(usage, "total_tokens", None)
    return total_tokens if isinstance(total_tokens, int) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
