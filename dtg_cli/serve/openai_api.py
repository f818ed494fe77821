"""The OpenAI-compatible routes' bodies: `/v1/chat/completions` and `/v1/completions` read into dtg requests,
and results written back as OpenAI's completion objects and stream chunks.

The tag list is the last user message (or `prompt`), in web-UI syntax. OpenAI's own fields map onto dtg's
settings (`n` → num, `max_tokens` → max_new_tokens, `seed`, `temperature`, `top_p`); dtg's other settings
and output options ride as extra fields of the body (`rating`, `length`, `ban`, `order`, ...). A field
neither knows is refused, as is an OpenAI field dtg cannot honour.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from dtg_cli.outcomes import Result
from dtg_cli.output import result_record
from dtg_cli.rendering import Style
from dtg_cli.serve.bodies import BODY_FIELDS, ApiError, Parsed, parse_generate, unknown_field
from dtg_cli.settings import shown

RENAMED = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens"}  # OpenAI's name -> dtg's
IGNORED = frozenset({"user", "stream_options", "store", "metadata"})  # carry nothing that changes a result
EXTRA = frozenset(BODY_FIELDS - {"tags", "requests", "num"})  # dtg's fields a body may add (`n` is OpenAI's too)
CHAT_FIELDS = frozenset({"messages", *RENAMED, *IGNORED, *EXTRA})
COMPLETION_FIELDS = frozenset({"prompt", *RENAMED, *IGNORED, *EXTRA})


def _settings(body: dict, known: frozenset[str]) -> dict:
    """The body's fields as a /v1/generate body (without its tags)."""
    fields = {}
    for name, value in body.items():
        if name not in known:
            raise unknown_field(name, known)
        if name in IGNORED:
            continue
        if name in RENAMED:
            if RENAMED[name] in fields:
                raise ApiError(400, "give one of max_tokens, max_completion_tokens, max_new_tokens", param=name)
            name = RENAMED[name]
        fields[name] = value
    return fields


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise ApiError(400, f"{where}: only text parts are read (the tag list)", param=where)
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"{where}: {shown(content)} must be a string or a list of text parts", param=where)


def parse_chat(body: Any) -> Parsed:
    """A chat completions body: the last user message is the tag list."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    fields = _settings(body, CHAT_FIELDS)
    messages = fields.pop("messages", None)
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "messages: a list of messages is required; the last user message holds the tags", param="messages")
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise ApiError(400, "messages: no user message; the last user message holds the tags", param="messages")
    tags = _text(messages[users[-1]].get("content"), f"messages[{users[-1]}].content")
    return parse_generate({**fields, "tags": tags})


def parse_completion(body: Any) -> Parsed:
    """A completions body: `prompt` is the tag list, or a list of them (one request each)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    fields = _settings(body, COMPLETION_FIELDS)
    prompt = fields.pop("prompt", "")
    if isinstance(prompt, str):
        return parse_generate({**fields, "tags": prompt})
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return parse_generate({**fields, "requests": [{"tags": p} for p in prompt]})
    raise ApiError(400, f"prompt: {shown(prompt)} must be a string or a list of strings", param="prompt")


def finish_reason(result: Result) -> str:
    """OpenAI's reason: `stop` when the model ended the result or its length was reached, `length` when
    the token budget or the context ran out."""
    return "stop" if result.stop in ("eos", "length") else "length"


def usage(results: list[Result]) -> dict:
    """Tokens read and written by every model call of the results (TIPO's chained calls, continuations)."""
    prompt = sum(len(step["input_ids"]) for r in results for step in r.steps)
    completion = sum(len(step["output_ids"]) for r in results for step in r.steps)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Reply:
    """One OpenAI answer: its id, its kind (chat or text) and how its choices are numbered."""

    def __init__(self, chat: bool, model: str, per_request: int):
        self.chat = chat
        self.model = model
        self.per_request = per_request  # results per request (`n`): choice index = request * n + variant
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def index(self, request: int, variant: int) -> int:
        return request * self.per_request + variant

    def whole(self, results: list[list[Result]], style: Style) -> dict:
        """The answer of a request that does not stream; `results` per request, in variant order. dtg's own
        result records ride along as `results`."""
        choices = []
        for r, per in enumerate(results):
            for v, result in enumerate(per):
                text = result.written(style)["text"]
                choice = {"index": self.index(r, v), "finish_reason": finish_reason(result)}
                if self.chat:
                    choice["message"] = {"role": "assistant", "content": text}
                else:
                    choice.update(text=text, logprobs=None)
                choices.append(choice)
        flat = [result for per in results for result in per]
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage(flat),
            "results": [result_record(result, style) for result in flat],
        }

    def chunk(self, request: int, variant: int, text: str | None = None, finish: str | None = None, role: bool = False) -> dict:
        """One stream chunk of one choice."""
        if self.chat:
            delta: dict = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": self.index(request, variant), "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": self.index(request, variant), "text": text or "", "finish_reason": finish, "logprobs": None}
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def usage_chunk(self, results: list[Result]) -> dict:
        """The last chunk, with `stream_options: {"include_usage": true}`."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(results),
        }


def wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
