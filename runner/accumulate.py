"""Pure accumulation of a chat reply from decoded stream events.

An :class:`Accumulator` takes the events of one streamed reply (or one
non-streamed ``chat.completion`` object) and builds a :class:`Reply`: the text
of choice 0, reasoning kept apart, ``finish_reason``, ``usage``, what the
server says about itself, tool calls, and the ``conversation`` handle
gpt4free returns in its final chunk.

It raises the project's stream errors: :class:`~runner.errors.InBandError` for
a ``data: {"error": ...}`` event, :class:`~runner.errors.ProtocolError` for data
that is not a JSON object, and — from :meth:`Accumulator.finish` —
:class:`~runner.errors.IncompleteStreamError` for a stream that ended with
neither ``[DONE]`` nor a ``finish_reason``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.errors import InBandError, IncompleteStreamError, ProtocolError
from runner.sse import ServerSentEvent

__all__ = ["Accumulator", "Reply", "error_message"]

# json.loads(s) is raw_decode plus two Python frames and a regex for trailing
# space; chunk data is almost always a bare object, so scan it directly.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse(data: str) -> Any:
    """``json.loads(data)``, raising ProtocolError when it is not JSON."""
    if data[:1] == "{":
        try:
            obj, end = _scan_once(data, 0)
        except (ValueError, StopIteration):
            pass  # json.loads below raises with the same verdict
        else:
            if end == len(data) or not data[end:].strip(" \t\n\r"):
                return obj
    try:
        return json.loads(data)
    except ValueError:
        raise ProtocolError(f"event data is not JSON: {data[:120]!r}", body=data[:2000]) from None


@dataclass
class Reply:
    """Everything a reply said, assembled."""

    text: str = ""
    reasoning: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    id: str | None = None
    model: str | None = None
    provider: str | None = None
    conversation: Any = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    choices: int = 0  # distinct choice indexes seen; the text is choice 0's
    done: bool = False  # "[DONE]" seen
    chunks: int = 0  # data events that carried JSON


def error_message(payload: Any) -> str:
    """The human message of an error payload, whatever its shape.

    Handles ``{"error": {"message": ...}}``, ``{"error": "..."}``,
    ``{"detail": [{"msg"|"message": ..., "loc": [...]}, ...]}`` (gpt4free and
    FastAPI validation errors), ``{"detail": "..."}`` and ``{"message": ...}``.
    """
    if isinstance(payload, dict):
        if payload.get("error"):
            inner = payload["error"]
            if isinstance(inner, dict):
                msg = inner.get("message") or inner.get("msg")
                if msg:
                    return str(msg)
                return json.dumps(inner, ensure_ascii=False)[:500]
            return str(inner)
        if "detail" in payload:
            detail = payload["detail"]
            if isinstance(detail, list):
                parts = []
                for item in detail:
                    if isinstance(item, dict):
                        msg = item.get("msg") or item.get("message") or ""
                        loc = item.get("loc")
                        where = ".".join(str(x) for x in loc) if isinstance(loc, list) else ""
                        parts.append(f"{where}: {msg}" if where else str(msg))
                    else:
                        parts.append(str(item))
                return "; ".join(parts)
            return str(detail)
        if payload.get("message"):
            return str(payload["message"])
    return json.dumps(payload, ensure_ascii=False)[:500]


class Accumulator:
    """Builds a :class:`Reply` from events; see the module docstring."""

    __slots__ = ("_reasoning", "_seen", "_text", "_tools", "reply")

    def __init__(self) -> None:
        self.reply = Reply()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._seen: set[int] = set()

    @property
    def text_so_far(self) -> str:
        """The text received until now (what a failed attempt keeps)."""
        return "".join(self._text)

    def add_event(self, event: ServerSentEvent) -> bool:
        """Take one event. Return True when it carried reply text, reasoning or a tool call.

        Events after ``[DONE]`` are ignored.
        """
        return self.add_events((event,))

    def add_events(self, events: Sequence[ServerSentEvent]) -> bool:
        """:meth:`add_event` for each event in order; True when any carried text.

        An error raised by one event leaves the events before it taken.
        """
        reply = self.reply
        add_object = self._add_object
        got = False
        for event in events:
            if reply.done:
                break
            data = event.data
            if data == "[DONE]":
                reply.done = True
                break
            if data[:1] == "{":  # _parse, inlined: this runs once per streamed chunk
                try:
                    obj, end = _scan_once(data, 0)
                except (ValueError, StopIteration):
                    obj = _parse(data)
                else:
                    if end != len(data):
                        obj = _parse(data)
            else:
                obj = _parse(data)
            if event.event == "error":
                raise InBandError(error_message(obj), body=obj)
            if not isinstance(obj, dict):
                raise ProtocolError(f"event data is not a JSON object: {data[:120]!r}")
            if add_object(obj, "delta"):
                got = True
        return got

    def add_completion(self, obj: Any) -> None:
        """Take a whole non-streamed ``chat.completion`` body (the server ignored ``stream``)."""
        if not isinstance(obj, dict):
            raise ProtocolError("response body is JSON but not an object")
        self._add_object(obj, "message")
        self.reply.done = True

    # The two methods below run once per streamed chunk: they are written for speed
    # (one dict lookup per field, no loops over field names).

    def _add_object(self, obj: dict[str, Any], key: str) -> bool:
        reply = self.reply
        if obj.get("error"):
            raise InBandError(error_message(obj), body=obj)
        reply.chunks += 1
        got = False
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index", 0)
                if not isinstance(index, int):
                    index = 0
                self._seen.add(index)
                if index != 0:
                    continue
                delta = choice.get(key)
                if isinstance(delta, dict) and self._add_delta(delta):
                    got = True
                finish = choice.get("finish_reason")
                if finish is not None:
                    reply.finish_reason = str(finish)
        # What the server says about itself: the latest value wins.
        value = obj.get("id")
        if value and isinstance(value, str):
            reply.id = value
        value = obj.get("model")
        if value and isinstance(value, str):
            reply.model = value
        value = obj.get("provider")
        if value and isinstance(value, str):
            reply.provider = value
        value = obj.get("usage")
        if value is not None:
            reply.usage = value if isinstance(value, dict) else {"value": value}
        value = obj.get("conversation")
        if value is not None:
            reply.conversation = value
        return got

    def _add_delta(self, delta: dict[str, Any]) -> bool:
        got = False
        content = delta.get("content")
        if content and isinstance(content, str):
            self._text.append(content)
            got = True
        piece = delta.get("reasoning")
        if piece and isinstance(piece, str):
            self._reasoning.append(piece)
            got = True
        piece = delta.get("reasoning_content")
        if piece and isinstance(piece, str):
            self._reasoning.append(piece)
            got = True
        tool_calls = delta.get("tool_calls")
        if tool_calls and isinstance(tool_calls, list):
            for call in tool_calls:
                if isinstance(call, dict):
                    self._add_tool_call(call)
                    got = True
        return got

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            index = len(self._tools)
        merged = self._tools.setdefault(
            index,
            {"index": index, "id": None, "type": None, "function": {"name": None, "arguments": ""}},
        )
        for name in ("id", "type"):
            if call.get(name):
                merged[name] = call[name]
        function = call.get("function")
        if isinstance(function, dict):
            if function.get("name"):
                merged["function"]["name"] = function["name"]
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                merged["function"]["arguments"] += arguments
            elif arguments is not None:
                merged["function"]["arguments"] += json.dumps(arguments, ensure_ascii=False)

    def finish(self) -> Reply:
        """The stream ended. Return the reply, or raise if it is incomplete."""
        reply = self.reply
        reply.text = "".join(self._text)
        reply.reasoning = "".join(self._reasoning) if self._reasoning else None
        reply.tool_calls = [self._tools[i] for i in sorted(self._tools)]
        reply.choices = len(self._seen)
        if not reply.done and reply.finish_reason is None:
            raise IncompleteStreamError(
                f"stream ended without [DONE] or a finish_reason after {reply.chunks} chunk(s)"
            )
        return reply
