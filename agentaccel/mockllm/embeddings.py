"""Deterministic embeddings and the model list."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

from .responses import CREATED, RequestError, count_tokens

MODELS = ("mock-llm", "gpt-4o-mini", "text-embedding-3-small")


def models_body() -> dict[str, Any]:
    return {"object": "list", "data": [model_body(name) for name in MODELS]}


def model_body(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "mockllm"}


def vector_bytes(text: str, model: str, dims: int) -> bytes:
    """A unit-length little-endian float32 vector seeded by a hash of (model, text).

    Both output formats are derived from these bytes, so the float and base64 paths
    of a client decode to exactly the same numbers.
    """
    seed = f"{model}\0{text}".encode()
    raw = b"".join(
        hashlib.sha256(seed + block.to_bytes(4, "little")).digest() for block in range((dims * 4 + 31) // 32)
    )
    values = [n / 2**31 - 1.0 for n in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return struct.pack(f"<{dims}f", *(v / norm for v in values))


def _inputs(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        # A flat list of ints is one pre-tokenized input; a list of such lists is a batch of them.
        if all(isinstance(x, int) for x in raw):
            return [" ".join(map(str, raw))]
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
            return [" ".join(map(str, x)) for x in raw]
    raise RequestError(
        "'input' must be a string, an array of strings, or an array of token arrays, and not empty.", "input"
    )


def embeddings_body(body: object, default_dims: int) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError("Request body must be a JSON object.")
    model = body.get("model", "text-embedding-3-small")
    if not isinstance(model, str):
        raise RequestError("'model' must be a string.", "model")
    inputs = _inputs(body.get("input"))
    dims = body.get("dimensions", default_dims)
    if dims is None:
        dims = default_dims
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 65536:
        raise RequestError("'dimensions' must be an integer between 1 and 65536.", "dimensions")
    encoding = body.get("encoding_format", "float") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    data: list[dict[str, Any]] = []
    for index, text in enumerate(inputs):
        packed = vector_bytes(text, model, dims)
        embedding: object
        if encoding == "base64":
            embedding = base64.b64encode(packed).decode("ascii")
        else:
            embedding = list(struct.unpack(f"<{dims}f", packed))
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(max(1, count_tokens(text)) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
