"""Fault plans: which requests the built-in endpoint answers badly, and how.

A plan is a list of rules. Each rule has *selectors* (which requests) and one
*action* (what goes wrong). The built-in endpoint asks the plan about every valid
chat-completions request; the first rule that fires decides the fault, later
rules are not consulted for that request. A plan with no rules never fires.

Spec grammar (the ``--faults`` string)::

    plan  = rule { ";" rule }        rules may also be separated by newlines
    rule  = item { ("," | ":") item }   canonical form: selectors ":" action
    item  = key [ "=" value ]        values cannot contain "," ";" ":" "="

Selectors (all optional; a rule without selectors matches every request):

    turn=N            the N-th user turn of a conversation (1-based)
    attempt=N         the N-th attempt at that turn (1 = first attempt only)
    conversation=S    conversation_id starts with S
    every=N           every N-th request that passes the selectors above
    p=F,seed=S        with probability F (0..1), drawn from a generator seeded
                      with S (default 0), one draw per request that passes the
                      selectors above, in arrival order
    times=N           fire at most N times in total

Actions (exactly one, optionally combined with ``stall``/``stall_between``):

    status=CODE         answer with HTTP CODE (400..599) and an error body:
                        ``{"error": {...}}`` for 429 and 5xx, gpt4free's
                        ``{"detail": [...]}`` for other 4xx. Options:
                        retry_after=S (Retry-After in seconds),
                        retry_after_date=S (Retry-After as an HTTP date S seconds
                        ahead), retry_after_ms=MS (retry-after-ms header),
                        message=TEXT
    reset               reset the connection (RST) before sending any byte
    drop_after=N        send N content chunks, then close the socket without the
                        chunked terminator (``drop`` alone: N=1)
    inband_after=N      send N content chunks, then
                        ``data: {"error": {"message": ...}}`` and end the body
                        without [DONE] (``inband`` alone: N=1). Options:
                        message=TEXT, done (send [DONE] after the error, as
                        recent gpt4free versions do)
    malformed_after=N   after N content chunks, a data line with broken JSON;
                        the stream then continues normally (``malformed``: N=1)
    bad_utf8_after=N    same, with a data line that is not UTF-8 (``bad_utf8``)
    huge_line_after=N   same, with a valid JSON chunk of about 1 MiB on one data
                        line (``huge_line``); option size=BYTES
    html                status 200, ``text/html`` page instead of a reply
    empty               status 200 with an empty body
    no_done             all content chunks, then the body ends: no final chunk
                        (so no finish_reason, no usage) and no [DONE]
    stall=S             wait S seconds before the first byte of the response
    stall_between=S     wait S more seconds before every event after the first

``K_after=N`` is the same as ``K,after=N``. N is capped at the number of
content chunks (the fault then happens just before the final chunk).

Examples::

    turn=2,attempt=1:status=503                 first attempt at turn 2 gets a 503
    status=429,retry_after=2                    every request is rate limited
    p=0.1,seed=7:reset; turn=3:drop_after=2     two rules, first that fires wins
    attempt=1,times=1:stall=0.5                 the very first request is slow

YAML file (``FaultPlan.from_file``): a list whose items are either rule strings
in the grammar above or mappings with the same keys, e.g.::

    - "turn=2,attempt=1:status=503"
    - {turn: 3, status: 429, retry_after: 1}
    - {conversation: ab12, reset: true}

How turns and attempts are recognised. The server keeps, per conversation_id,
the (number of user messages, text of the last user message) of the previous
request. A request with the same pair is another attempt at the same turn;
anything else starts the next turn. A client may instead say which attempt it
is sending with an ``x-runner-attempt: N`` header (N >= 1): N > 1 means a retry
of the current turn. Requests without a conversation_id share one pseudo
conversation, so send a conversation_id when targeting turns concurrently.
Without retries, turn N is simply the N-th request of the conversation.

Plans are stateful (``every``, ``times`` and ``p`` consume state) and
thread-safe; parse a fresh plan for each server.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runner.errors import UsageError

FaultKind = Literal[
    "status",
    "reset",
    "drop",
    "inband",
    "malformed",
    "bad_utf8",
    "huge_line",
    "html",
    "empty",
    "no_done",
    "stall",
]

# Kinds whose position in the stream is set by ``after``.
POSITIONAL_KINDS: frozenset[str] = frozenset(
    {"drop", "inband", "malformed", "bad_utf8", "huge_line"}
)
_FLAG_KINDS: frozenset[str] = frozenset({"reset", "html", "empty", "no_done"}) | POSITIONAL_KINDS
_SELECTOR_KEYS = ("turn", "attempt", "conversation", "every", "p", "seed", "times")
_OPTION_KEYS = (
    "after",
    "retry_after",
    "retry_after_date",
    "retry_after_ms",
    "message",
    "done",
    "size",
    "stall",
    "stall_between",
)
_ACTION_KEYS = ("status", *sorted(_FLAG_KINDS), *(f"{k}_after" for k in sorted(POSITIONAL_KINDS)))
_ALL_KEYS = (*_SELECTOR_KEYS, *_ACTION_KEYS, *_OPTION_KEYS)
_EXAMPLE = "example: turn=2,attempt=1:status=503"
HUGE_LINE_SIZE = 1024 * 1024


@dataclass(frozen=True)
class FaultRule:
    """One parsed rule: selectors, then the fault to apply when it fires."""

    kind: FaultKind
    turn: int | None = None
    attempt: int | None = None
    conversation: str | None = None
    every: int | None = None
    p: float | None = None
    seed: int = 0
    times: int | None = None
    status: int | None = None
    retry_after: float | None = None
    retry_after_date: float | None = None
    retry_after_ms: int | None = None
    message: str | None = None
    done: bool = False
    after: int = 1
    size: int = HUGE_LINE_SIZE
    stall: float = 0.0
    stall_between: float = 0.0

    def __str__(self) -> str:
        """The rule in canonical spec form, e.g. ``turn=2,attempt=1:status=503``."""
        sel: list[str] = []
        for key in ("turn", "attempt", "conversation", "every", "p"):
            value = getattr(self, key)
            if value is not None:
                sel.append(f"{key}={_fmt(value)}")
        if self.p is not None:
            sel.append(f"seed={self.seed}")
        if self.times is not None:
            sel.append(f"times={self.times}")
        act: list[str] = []
        if self.kind == "status":
            act.append(f"status={self.status}")
        elif self.kind in POSITIONAL_KINDS:
            act.append(f"{self.kind}_after={self.after}")
        elif self.kind != "stall":
            act.append(self.kind)
        for key in ("retry_after", "retry_after_date", "retry_after_ms", "message"):
            value = getattr(self, key)
            if value is not None:
                act.append(f"{key}={_fmt(value)}")
        if self.done:
            act.append("done")
        if self.kind == "huge_line" and self.size != HUGE_LINE_SIZE:
            act.append(f"size={self.size}")
        if self.stall:
            act.append(f"stall={_fmt(self.stall)}")
        if self.stall_between:
            act.append(f"stall_between={_fmt(self.stall_between)}")
        return (",".join(sel) + ":" if sel else "") + ",".join(act)


@dataclass(frozen=True)
class FaultContext:
    """What the server knows about a request when it consults the plan."""

    conversation_id: str | None
    turn: int
    attempt: int


class FaultPlan:
    """An ordered, stateful, thread-safe list of :class:`FaultRule`."""

    def __init__(self, rules: list[FaultRule] | tuple[FaultRule, ...] = ()) -> None:
        self.rules: tuple[FaultRule, ...] = tuple(rules)
        self._lock = threading.Lock()
        self._rngs = [random.Random(rule.seed) for rule in self.rules]
        self._seen = [0] * len(self.rules)  # requests that passed the fixed selectors
        self._fired = [0] * len(self.rules)

    def __repr__(self) -> str:
        return f"FaultPlan.parse({str(self)!r})"

    def __str__(self) -> str:
        return "; ".join(str(rule) for rule in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Parse a spec string (see the module docstring); raises UsageError."""
        rules: list[FaultRule] = []
        chunks = [c.strip() for c in spec.replace("\n", ";").split(";")]
        for text in (c for c in chunks if c):
            where = f"fault rule {len(rules) + 1} ({text!r})"
            items: list[tuple[str, str | None]] = []
            for raw in text.replace(":", ",").split(","):
                item = raw.strip()
                if not item:
                    raise UsageError(f"{where}: empty item; separate items with ',' ({_EXAMPLE})")
                key, sep, value = item.partition("=")
                items.append((key.strip().lower(), value.strip() if sep else None))
            rules.append(_build_rule(items, where))
        return cls(rules)

    @classmethod
    def from_file(cls, path: str | Path) -> FaultPlan:
        """Read a YAML list of rules (strings or mappings); raises UsageError."""
        import yaml  # only needed here; keeps server start-up light

        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read fault file {path}: {exc}; check the path") from exc
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            one_line = " ".join(str(exc).split())
            raise UsageError(f"{path}: not valid YAML: {one_line}") from exc
        if data is None:
            return cls()
        if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
            raise UsageError(f"{path}: expected a YAML list of fault rules ({_EXAMPLE})")
        rules: list[FaultRule] = []
        for index, (entry, item_node) in enumerate(zip(data, node.value, strict=True), 1):
            where = f"{path}:{item_node.start_mark.line + 1}: fault rule {index}"
            if isinstance(entry, str):
                try:
                    parsed = cls.parse(entry).rules
                except UsageError as exc:
                    raise UsageError(f"{where}: {exc}") from exc
                if len(parsed) != 1:
                    raise UsageError(f"{where}: give one rule per list item, without ';'")
                rules.append(parsed[0])
            elif isinstance(entry, dict):
                rules.append(_build_rule(_mapping_items(entry, where), where))
            else:
                raise UsageError(
                    f"{where}: expected a rule string or a mapping, got {type(entry).__name__}"
                )
        return cls(rules)

    @classmethod
    def from_option(cls, value: str) -> FaultPlan:
        """A command-line value: ``@path`` reads a YAML file, anything else is a spec."""
        if value.startswith("@"):
            return cls.from_file(value[1:])
        return cls.parse(value)

    def choose(self, ctx: FaultContext) -> FaultRule | None:
        """The rule that fires for this request, if any; updates the plan's state."""
        with self._lock:
            for index, rule in enumerate(self.rules):
                if rule.turn is not None and rule.turn != ctx.turn:
                    continue
                if rule.attempt is not None and rule.attempt != ctx.attempt:
                    continue
                if rule.conversation is not None and not (ctx.conversation_id or "").startswith(
                    rule.conversation
                ):
                    continue
                if rule.times is not None and self._fired[index] >= rule.times:
                    continue
                self._seen[index] += 1
                if rule.every is not None and self._seen[index] % rule.every:
                    continue
                if rule.p is not None and self._rngs[index].random() >= rule.p:
                    continue
                self._fired[index] += 1
                return rule
        return None


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _mapping_items(entry: dict[Any, Any], where: str) -> list[tuple[str, str | None]]:
    items: list[tuple[str, str | None]] = []
    for key, value in entry.items():
        name = str(key).strip().lower()
        if value is True and (name in _FLAG_KINDS or name == "done"):
            items.append((name, None))
        elif value is False or value is None:
            continue
        elif isinstance(value, (dict, list)):
            raise UsageError(
                f"{where}: {name}: expected a single value, got a {type(value).__name__}"
            )
        else:
            items.append((name, str(value)))
    return items


def _build_rule(items: list[tuple[str, str | None]], where: str) -> FaultRule:
    fields: dict[str, Any] = {}
    kinds: list[str] = []
    for key, value in items:
        if key not in _ALL_KEYS:
            raise UsageError(f"{where}: unknown key {key!r}; known keys: {', '.join(_ALL_KEYS)}")
        if key in fields or (key in _FLAG_KINDS and key in kinds):
            raise UsageError(f"{where}: {key!r} given twice")
        if key in _FLAG_KINDS or key == "done":
            if value is not None:
                raise UsageError(f"{where}: {key!r} takes no value (write just {key!r})")
            if key == "done":
                fields["done"] = True
            else:
                kinds.append(key)
            continue
        if value is None or value == "":
            raise UsageError(f"{where}: {key!r} needs a value, e.g. {_key_example(key)}")
        if key.endswith("_after") and key[: -len("_after")] in POSITIONAL_KINDS:
            kinds.append(key[: -len("_after")])
            if "after" in fields:
                raise UsageError(f"{where}: 'after' given twice")
            fields["after"] = _number(key, value, int, 0, where)
        elif key == "status":
            kinds.append("status")
            fields["status"] = _number(key, value, int, 400, where, high=599)
        elif key == "conversation" or key == "message":
            fields[key] = value
        elif key == "p":
            fields["p"] = _number(key, value, float, 0, where, high=1)
        elif key in ("turn", "attempt", "every", "times", "size"):
            fields[key] = _number(key, value, int, 1, where)
        elif key in ("seed", "after", "retry_after_ms"):
            fields[key] = _number(key, value, int, 0, where)
        else:  # retry_after, retry_after_date, stall, stall_between
            fields[key] = _number(key, value, float, 0, where)
    if len(kinds) > 1:
        raise UsageError(f"{where}: one action per rule, got {' and '.join(kinds)}")
    if kinds:
        kind = kinds[0]
    elif "stall" in fields or "stall_between" in fields:
        kind = "stall"
    else:
        raise UsageError(f"{where}: no action; add one such as status=503, reset or drop_after=2")
    _check_options(kind, fields, where)
    return FaultRule(kind=kind, **fields)  # type: ignore[arg-type]


def _check_options(kind: str, fields: dict[str, Any], where: str) -> None:
    allowed = {
        "status": {"retry_after", "retry_after_date", "retry_after_ms", "message"},
        "inband": {"message", "done", "after"},
        "huge_line": {"size", "after"},
    }.get(kind, {"after"} if kind in POSITIONAL_KINDS else set())
    for key in ("retry_after", "retry_after_date", "retry_after_ms", "message", "done", "size"):
        if key in fields and key not in allowed:
            raise UsageError(f"{where}: {key!r} does not apply to {kind!r}")
    if "after" in fields and "after" not in allowed:
        raise UsageError(f"{where}: 'after' only applies to {', '.join(sorted(POSITIONAL_KINDS))}")
    if "retry_after" in fields and "retry_after_date" in fields:
        raise UsageError(f"{where}: give retry_after or retry_after_date, not both")
    if "seed" in fields and "p" not in fields:
        raise UsageError(f"{where}: 'seed' only makes sense with 'p', e.g. p=0.1,seed=7")


def _number(
    key: str,
    value: str,
    kind: type[int] | type[float],
    low: float,
    where: str,
    *,
    high: float | None = None,
) -> Any:
    try:
        number = kind(value)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise UsageError(f"{where}: {key} must be {noun}, got {value!r}") from None
    if not math.isfinite(number) or number < low or (high is not None and number > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        bound = bound if math.isfinite(number) else f"a finite number {bound}"
        raise UsageError(f"{where}: {key} must be {bound}, got {value}")
    return number


def _key_example(key: str) -> str:
    examples = {"status": "status=503", "p": "p=0.1,seed=7", "conversation": "conversation=ab12"}
    return examples.get(key, f"{key}=2")
