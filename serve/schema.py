"""What the service declares in its OpenAPI document (/docs.json), made to match what it enforces.

The request and response models are built for the packaged model the server loads (its compress.json, read when
the service module is imported): a classification model serves only POST /classify, with `texts` items that are
non-blank strings (or, for a sentence-pair model, [first, second] pairs of them); a QA model serves only
POST /answer, with questions no longer than the model can read. BentoML derives the request and 200 schemas
from these types; `truthful_openapi` then puts the service's own error body and every status it answers with
(400, 413, 415, 503 with Retry-After, 500) in place of BentoML's generic error entries.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, Field, StringConstraints

__all__ = ["ERROR_SCHEMA", "Answer", "ClassifyResult", "RegressionResult", "Text", "served_meta", "truthful_openapi"]

# A text the model can read: at least one character that is not whitespace (`pattern` matches anywhere).
Text = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]


def question_type(max_chars: int | None):
    """A question: non-blank, and (when the model's window is known) at most `max_chars` characters, which keeps
    it within the model's question budget in tokens (a WordPiece token spans at least one character)."""
    if max_chars is None:
        return Text
    return Annotated[str, StringConstraints(min_length=1, max_length=max_chars, pattern=r"\S")]


class ClassifyResult(BaseModel):
    label: str = Field(description="the most likely label")
    label_id: int = Field(ge=0, description="its id in the model's label order")
    score: float = Field(ge=0, le=1, description="its probability")
    scores: dict[str, float] = Field(description="every label's probability (softmax)")


class RegressionResult(BaseModel):
    value: float = Field(description="the predicted value")


class Answer(BaseModel):
    answer: str = Field(description="the answer text; empty when there is no answer")
    start: Optional[int] = Field(ge=0, description="character offset of the answer in the context; null when none")
    end: Optional[int] = Field(ge=0, description="character offset just past the answer; null when none")
    no_answer: bool = Field(description="the question has no answer in the context (null odds above threshold)")
    score: Optional[float] = Field(description="the span's score (start + end logits)")
    null_odds: Optional[float] = Field(description="no-answer score minus the best span's score")
    threshold: Optional[float] = Field(description="the no-answer threshold learnt on the eval set")


def served_meta(tag: str) -> dict[str, Any] | None:
    """compress.json of the packaged model `tag` in the BentoML store; None when it cannot be read here (the
    service then declares both endpoints and the generic text types, and fails at start as before)."""
    try:
        import bentoml

        return json.loads((Path(bentoml.models.get(tag).path) / "compress.json").read_text())
    except Exception:  # noqa: BLE001 - a missing or unreadable model only changes what is declared
        return None


ERROR_SCHEMA = {
    "type": "object", "title": "Error", "required": ["error", "field"],
    "properties": {
        "error": {"type": "string", "description": "<field>: what is wrong and what to send instead"},
        "field": {"type": "string", "nullable": True, "description": "the field at fault (texts[2], body, ...)"},
        "detail": {"type": "array", "items": {"type": "object"}, "description": "400: pydantic's error list"},
    },
}
_ERRORS = {
    "400": "Bad input: a field is missing, of the wrong type, empty or too long",
    "413": "The body is over the server's limit (COMPRESS_MAX_BODY_BYTES)",
    "415": "The body is not application/json in UTF-8",
    "503": "Overloaded: retry after the Retry-After seconds",
    "500": "A server fault (never a client's input); the server log has its traceback",
}


def truthful_openapi(doc: dict[str, Any], api_paths: tuple[str, ...]) -> dict[str, Any]:
    """BentoML's OpenAPI document with the service's error body and statuses on every API operation."""
    doc = copy.deepcopy(doc)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in api_paths:
        op = (doc.get("paths") or {}).get(path, {}).get("post")
        if op is None:
            continue
        if "requestBody" in op:
            op["requestBody"]["required"] = True  # a POST without a body is refused (415/400)
        responses = {"200": op["responses"]["200"]}
        for code, text in _ERRORS.items():
            responses[code] = {"description": text, "content": ref}
        responses["503"]["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                                       "schema": {"type": "integer", "minimum": 0}}}
        op["responses"] = responses
    return doc


def is_pair(meta: dict[str, Any] | None) -> bool:
    """The model reads sentence pairs (pair classification, or regression over two text columns)."""
    return meta is not None and meta["task"]["type"] != "qa" and (
        meta["task"]["type"] == "pair_classification" or len(meta["task"].get("text_columns") or []) == 2)


def max_question_chars(meta: dict[str, Any] | None) -> int | None:
    if meta is None or meta["task"]["type"] != "qa":
        return None
    d = meta["data"]
    return int(d["max_seq_length"]) - int(d["doc_stride"]) - 4
