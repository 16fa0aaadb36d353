"""Choosing boards by what they are: the selector syntax shared by the API, the CLI and labgrid.

Grammar (whitespace around terms and operators is ignored; an empty selector matches every board)::

    SELECTOR := TERM ("," TERM)*
    TERM     := ["!"] "tag:" NAME ["=" VALUE]       has the free-form tag NAME (of that value); "!" = has it not
              | KEY OP VALUE ("|" VALUE)*           an attribute against a value ("=" / "!=": any of several)
    OP       := "=" | "!=" | ">=" | "<=" | ">" | "<"

Keys, and what their values are:

    platform, id, address, auth, source   text; "=" and "!=" only, with shell globs (id=board-0*)
    holder                                who holds the board exclusively; "holder=" (empty): nobody does
    backend                               "=": the agent has that backend (onnxruntime, rknnrt); "!=": lacks it
    npu_cores, sessions                   whole numbers
    free_mem                              a size in bytes, K/M/G/T suffixes binary (512M, 2G)
    load                                  the agent's 1-minute load average per CPU (0.5 = half busy)
    version                               the agent's version, compared part by part (0.1 == 0.1.0 < 0.10)
    any other NAME                        the agent's tag NAME (``lab=2`` is ``tag:lab=2``); ">" and "<" compare
                                          numbers

A board that does not report an attribute (an old agent without free memory in its advert) never matches a
term on it. Example: ``platform=rk3588|rk3576,tag:camera,lab=2,npu_cores>=2,backend=rknnrt,free_mem>=512M,
version>=0.1``. A malformed term raises :class:`SelectorError` naming it.

``Selector.tags()`` is the part a tag-matching scheduler (labgrid places) can express: the exact-match terms, in
the encoding :func:`device_tags` gives a board, so that ``selector.tags().items() <= device_tags(d).items()``
whenever ``selector.matches(d)``. The other terms are checked with ``matches()`` on the boards it hands out.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rkfarm.errors import RkfarmError

OPS = ("!=", ">=", "<=", "=", ">", "<")  # longest first: "!=" before "=", ">=" before ">"
TEXT_KEYS = ("platform", "id", "address", "auth", "source", "holder")
INT_KEYS = ("npu_cores", "sessions")
KNOWN_KEYS = (*TEXT_KEYS, *INT_KEYS, "backend", "free_mem", "load", "version")
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Record field names (rkfarm.remote.discovery.Device.to_dict()) per selector key.
FIELD_OF = {"id": "agent_id", "backend": "backends", "free_mem": "mem_free_bytes"}


class SelectorError(RkfarmError, ValueError):
    """A selector that does not parse; the message names the bad term."""


def parse_size(text: str) -> int:
    """'512M', '2G', '1048576' -> bytes (binary units)."""
    found = _SIZE.match(text.strip())
    if not found:
        raise ValueError(f"not a size: {text!r} (write e.g. 512M or 2G)")
    return int(float(found.group(1)) * _UNITS[found.group(2).lower()])


def version_key(text: str) -> tuple[int, ...]:
    """'0.1.0' -> (0, 1): numeric parts, trailing zeros dropped so 0.1 == 0.1.0; a suffix ('0.2rc1') ends it."""
    parts: list[int] = []
    for piece in text.strip().lstrip("vV").split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() != len(piece):
            break
    if not parts:
        raise ValueError(f"not a version: {text!r} (write e.g. 0.1 or 1.2.3)")
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def tag_key(name: str) -> str:
    """A name as a tag-matching scheduler takes it: lower case, [a-z0-9_] only, starting with a letter."""
    key = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return key if key[:1].isalpha() else "t" + key


def tag_value(value: str) -> str:
    """A value as a tag-matching scheduler takes it: lower case, [a-z0-9_] only (a bare tag is '1')."""
    return re.sub(r"[^a-z0-9_]", "_", value.lower()) if value else "1"


def device_tags(record: Any) -> dict[str, str]:
    """The tags a board is exported with (labgrid): ``platform``, ``agent_id``, ``npu_cores``, one
    ``backend_<name>`` per backend and ``tag_<name>`` per free-form tag, encoded by ``tag_key``/``tag_value``."""
    fields = _fields(record)
    tags = {
        "platform": tag_value(str(fields.get("platform", ""))),
        "agent_id": tag_value(str(fields.get("agent_id", ""))),
        "npu_cores": str(fields.get("npu_cores", 0)),
    }
    tags.update({tag_key(f"backend_{b}"): "1" for b in fields.get("backends", ()) or ()})
    tags.update({tag_key(f"tag_{k}"): tag_value(v) for k, v in (fields.get("tags") or {}).items()})
    return tags


def _fields(record: Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    to_dict = getattr(record, "to_dict", None)
    fields: Mapping[str, Any] = to_dict() if callable(to_dict) else vars(record)
    return fields


@dataclass(frozen=True)
class Term:
    """One condition: ``key op values`` (``tag`` set for a tag term), as written in ``text``."""

    text: str
    key: str
    op: str
    values: tuple[str, ...]
    tag: bool = False
    negated: bool = False  # "!tag:NAME"

    def matches(self, fields: Mapping[str, Any]) -> bool:
        result = self._test(fields)
        return not result if self.negated else result

    def _test(self, fields: Mapping[str, Any]) -> bool:
        if self.tag:
            tags: Mapping[str, str] = fields.get("tags") or {}
            if self.key not in tags:
                return self.op == "!=" and bool(self.values)  # lab!=2 holds for a board without the tag
            if not self.values:
                return True  # tag:NAME: present, whatever its value
            ordering = self.op not in ("=", "!=")
            return _compare(self.op, tags[self.key], self.values, float if ordering else None)
        value = fields.get(FIELD_OF.get(self.key, self.key))
        if self.key == "backend":
            present = any(v in (value or ()) for v in self.values)
            return present if self.op == "=" else not present
        if value is None:
            return False
        if self.key == "holder" and self.values == ("",):
            return (not value) if self.op == "=" else bool(value)
        return _compare(self.op, value, self.values, _CASTS.get(self.key))

    def exact_tag(self) -> tuple[str, str] | None:
        """(tag key, tag value) when this term is a plain exact match a tag scheduler can express."""
        if self.negated or self.op != "=" or len(self.values) > 1:
            return None
        value = self.values[0] if self.values else ""
        if any(c in value for c in "*?["):
            return None
        if self.tag:
            return tag_key(f"tag_{self.key}"), tag_value(value)
        if self.key == "platform":
            return "platform", tag_value(value)
        if self.key == "id":
            return "agent_id", tag_value(value)
        if self.key == "npu_cores":
            return "npu_cores", str(int(value))
        if self.key == "backend":
            return tag_key(f"backend_{value}"), "1"
        return None


_CASTS: dict[str, Callable[[str], Any]] = {
    "npu_cores": int,
    "sessions": int,
    "free_mem": parse_size,
    "load": float,
    "version": version_key,
}


def _compare(op: str, actual: Any, wanted: tuple[str, ...], cast: Callable[[str], Any] | None) -> bool:
    """``actual op wanted``: text (``cast`` None) matches shell globs; otherwise both sides are cast (a number
    the record already holds is taken as it is)."""
    if cast is None:
        hit = any(fnmatch.fnmatchcase(str(actual), w) for w in wanted)
        return hit if op == "=" else not hit
    try:
        have = cast(actual) if isinstance(actual, str) else actual
    except ValueError:
        return False  # a tag whose value is not a number is not > 2
    if isinstance(have, float) and math.isnan(have):
        return False
    if op in ("=", "!="):
        hit = any(have == cast(w) for w in wanted)
        return hit if op == "=" else not hit
    want = cast(wanted[0])
    return bool({">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want}[op])


def _parse_term(text: str) -> Term:
    raw = text.strip()
    if not raw:
        raise SelectorError("selector: an empty term (two commas in a row, or a trailing comma)")
    negated = raw.startswith("!")
    body = raw[1:].strip() if negated else raw
    if body.lower().startswith("tag:"):
        rest = body[4:].strip()
        name, sep, value = rest.partition("=")
        name, value = name.strip(), value.strip()
        if not name or not _NAME.match(name):
            raise SelectorError(f"selector term {raw!r}: a tag name is letters, digits, '_', '.' or '-'")
        if sep and not value:
            raise SelectorError(f"selector term {raw!r}: no value after '='; write tag:{name} for any value")
        return Term(raw, name, "=", (value,) if sep else (), tag=True, negated=negated)
    if negated:
        raise SelectorError(f"selector term {raw!r}: '!' goes only before tag:NAME; write KEY!=VALUE")
    for op in OPS:
        index = body.find(op)
        if index > 0:
            break
    else:
        raise SelectorError(
            f"selector term {raw!r}: expected KEY=VALUE (or !=, >=, <=, >, <) or tag:NAME; "
            f"keys: {', '.join(KNOWN_KEYS)} or a tag name"
        )
    key = body[:index].strip().lower()
    value_text = body[index + len(op) :].strip()
    if not _NAME.match(key):
        raise SelectorError(f"selector term {raw!r}: {key!r} is not a key (letters, digits, '_', '.', '-')")
    values = tuple(v.strip() for v in value_text.split("|"))
    return _checked(Term(raw, key, op, values, tag=key not in KNOWN_KEYS))


def _checked(term: Term) -> Term:
    """The term, once its values fit its key and operator."""
    raw, key, op, values = term.text, term.key, term.op, term.values
    ordering = op not in ("=", "!=")
    if ordering and len(values) > 1:
        raise SelectorError(f"selector term {raw!r}: '|' (any of) goes with = and != only")
    if any(not v for v in values) and not (key == "holder" and values == ("",) and not ordering):
        hint = "; holder= (empty) means nobody holds it" if key == "holder" else ""
        raise SelectorError(f"selector term {raw!r}: no value after {op!r}{hint}")
    if term.tag:
        if ordering:
            _cast_all(raw, values, float, "a number (tags compare as numbers with > and <)")
        return term
    if key in TEXT_KEYS or key == "backend":
        if ordering:
            raise SelectorError(f"selector term {raw!r}: {key} takes = or != only")
        return term
    what = {
        "npu_cores": "a whole number",
        "sessions": "a whole number",
        "free_mem": "a size such as 512M or 2G",
        "load": "a number such as 0.5",
        "version": "a version such as 0.1.0",
    }[key]
    _cast_all(raw, values, _CASTS[key], what)
    return term


def _cast_all(raw: str, values: tuple[str, ...], cast: Callable[[str], Any], what: str) -> None:
    for value in values:
        try:
            cast(value)
        except ValueError:
            raise SelectorError(f"selector term {raw!r}: {value!r} is not {what}") from None


class Selector:
    """A parsed selector: ``Selector.parse('platform=rk3588,tag:camera').matches(device)``."""

    def __init__(self, terms: tuple[Term, ...] = (), text: str = "") -> None:
        self.terms = terms
        self.text = text

    @classmethod
    def parse(cls, text: str | Selector | None) -> Selector:
        """A selector from its text (None or '' selects every board; a Selector is returned as it is)."""
        if isinstance(text, Selector):
            return text
        if text is None or not text.strip():
            return cls((), "")
        return cls(tuple(_parse_term(t) for t in text.split(",")), text.strip())

    def matches(self, record: Any) -> bool:
        """True when the board (a ``Device``, its ``to_dict()``, or any mapping with those fields) fits every term."""
        fields = _fields(record)
        return all(term.matches(fields) for term in self.terms)

    def tags(self) -> dict[str, str]:
        """The exact-match terms as scheduler tags (see the module docstring and :func:`device_tags`)."""
        found = (term.exact_tag() for term in self.terms)
        return dict(t for t in found if t is not None)

    def __str__(self) -> str:
        return self.text or "(any board)"

    def __repr__(self) -> str:
        return f"Selector({self.text!r})"


def parse_selector(text: str | Selector | None) -> Selector:
    return Selector.parse(text)


__all__ = ["Selector", "SelectorError", "Term", "device_tags", "parse_selector", "parse_size", "version_key"]
