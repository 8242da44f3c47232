"""The prompt-injection and SQL-injection patterns, and matching a text against them.

Each rule is (triggers, pattern): the pattern only runs when one of its lower-case literal triggers occurs
in the lower-cased text — a substring test costs microseconds, a regex scan with \\b at every position does
not. Every pattern, built in or a user's extra one, is matched case-insensitively with ^ and $ at every line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

PATTERN_FLAGS = re.IGNORECASE | re.MULTILINE  # any case, ^ and $ at every line

Rules = tuple[tuple[tuple[str, ...], re.Pattern], ...]

_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|foregoing|original|initial|system)"
_ORDERS = r"(?:instructions?|prompts?|directions?|rules|guidelines|messages?|context|commands?|directives?)"

_PROMPT_INJECTION = [
    # "ignore all previous instructions", "disregard your prior rules", "forget the above prompt"
    (("ignore", "disregard", "forget", "override", "bypass", "skip"),
     rf"\b(?:ignore|disregard|forget|override|bypass|skip)\s+"
     rf"(?:(?:all|any|every|each|the|your|my|of|these|those)\s+){{0,3}}{_PREVIOUS}\s+{_ORDERS}"),
    # "disregard the above", "ignore everything above", "forget all of the above"
    (("ignore", "disregard", "forget"),
     r"\b(?:ignore|disregard|forget)\s+(?:(?:all|everything|of|the)\s+){0,3}(?:above|before\s+this)\b"),
    # "you are now DAN", "you are DAN", "DAN mode", "DAN (Do Anything Now)"
    (("dan",),
     r"\byou\s+are\s+(?:now\s+)?(?-i:DAN)\b|\b(?-i:DAN)\s+mode\b"
     r"|\b(?-i:DAN)\s*\(\s*do\s+anything\s+now\s*\)|\bdo\s+anything\s+now\s*\(\s*(?-i:DAN)\s*\)"),
    # "you are now in developer mode", "you are now an unrestricted AI", "developer mode enabled"
    (("you are now", "mode"),
     r"\byou\s+are\s+now\s+(?:in\s+(?:developer|god|jailbreak|unrestricted|dev)\s+mode"
     r"|an?\s+(?:unrestricted|unfiltered|uncensored|jailbroken)\b)"
     r"|\b(?:developer|jailbreak)\s+mode\s+(?:enabled|activated|on)\b"),
    # "system prompt:", "reveal your system prompt", "print the hidden instructions"
    (("prompt", "instructions"),
     r"\bsystem\s+prompt\s*:"
     r"|\b(?:reveal|print|show|repeat|output|leak|tell\s+me)\s+(?:me\s+)?(?:your|the)\s+"
     r"(?:system|initial|hidden|secret|original)\s+(?:prompt|instructions)\b"),
    # role tags of chat templates smuggled into text; a role line that gives orders
    (("<|", "inst]", "<<sys>>", "<</sys>>"),
     r"<\|(?:im_start|im_end|system|user|assistant|endoftext|start_header_id|end_header_id|eot_id)\|>"
     r"|\[/?INST\]|<</?SYS>>"),
    (("system", "instruction", "assistant"),
     r"^[ \t]*###[ \t]*(?:system|instruction)s?[ \t]*:"
     r"|^[ \t]*(?:system|assistant)[ \t]*:[ \t]*(?:you\s+are|ignore|disregard|from\s+now\s+on|new\s+instructions)"),
]
_SQL_INJECTION = [
    # "' OR 1=1 --", "' or 'a'='a", "admin' AND 1=1", "OR 1=1"
    (("=",), r"'\s*(?:\)\s*)?(?:or|and)\s+'?\w+'?\s*=\s*'?\w+|\bor\s+1\s*=\s*1\b"),
    # "UNION SELECT", "UNION ALL SELECT"
    (("union",), r"\bunion\s+(?:all\s+)?select\b"),
    # "; DROP TABLE users", "; DELETE FROM accounts", "; EXEC xp_cmdshell", "; SHUTDOWN --"
    ((";",), r";\s*(?:drop\s+(?:table|database|schema)|truncate\s+table|delete\s+from|insert\s+into|alter\s+table)\b"
             r"|;\s*(?:exec(?:ute)?\s+(?:xp_|sp_)|shutdown\s*(?:--|;|$))"),
    # payload staples: command shell, time-based probes, schema enumeration
    (("xp_cmdshell", "waitfor", "pg_sleep", "information_schema"),
     r"\bxp_cmdshell\b|\bwaitfor\s+delay\s+'|\bpg_sleep\s*\(|\binformation_schema\s*\.\s*(?:tables|columns)\b"),
]


def _compile(rules: Iterable[tuple[tuple[str, ...], str]]) -> Rules:
    return tuple((triggers, re.compile(pattern, PATTERN_FLAGS)) for triggers, pattern in rules)


PROMPT_RULES = _compile(_PROMPT_INJECTION)
SQL_RULES = _compile(_SQL_INJECTION)


def check_patterns(value: list[str]) -> list[str]:
    """``value`` when every pattern compiles, else a ValueError naming the first that does not."""
    for pattern in value:
        try:
            re.compile(pattern, PATTERN_FLAGS)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
    return value


@functools.lru_cache(maxsize=32)
def _extra_regexes(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    # compiled one by one: a user's pattern may carry its own global flags, e.g. "(?s)..."
    return tuple(re.compile(p, PATTERN_FLAGS) for p in patterns)


def matches(rules: Rules, extra_patterns: list[str], text: str, lowered: str) -> bool:
    """Whether ``text`` (lower-cased: ``lowered``) matches a rule whose trigger it holds, or an extra pattern."""
    return (any(pattern.search(text) for triggers, pattern in rules if any(t in lowered for t in triggers))
            or any(p.search(text) for p in _extra_regexes(tuple(extra_patterns))))
