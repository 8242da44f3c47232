"""Presidio recognizers for secrets a training corpus must never hold.

Four entity types, all on by default in ``PiiSettings.entities``:

- ``API_KEY``: provider keys and tokens with a known shape (AWS access key ids, GitHub ``ghp_``/
  ``github_pat_``, GitLab ``glpat-``, Slack ``xox*`` and webhook URLs, OpenAI/Anthropic-style ``sk-...``,
  Stripe ``sk_live_``, Google ``AIza``, Hugging Face ``hf_``, npm ``npm_``), JWTs, bearer/basic
  credentials after ``Authorization``/``Bearer``, and high-entropy values assigned to a key-like name
  (``api_key = "..."``, ``"client_secret": "..."``, ``AUTH_TOKEN=...``).
- ``PASSWORD``: values assigned to a password-like name in code, config, JSON, XML and command lines
  (``password=...``, ``passwd: ...``, ``"password": "..."``, ``--password ...``, ``PGPASSWORD=...``).
- ``PRIVATE_KEY``: PEM/OpenSSH/PGP private key blocks, also inside JSON strings (``\\n`` escapes) and
  when the END line is missing.
- ``CONNECTION_STRING``: URLs with credentials in them (``postgres://user:pass@host/db``,
  ``mongodb+srv://...``, ``redis://:pass@host``, ``https://user:token@host``).

Where a name and a value are matched, only the value is reported, so ``password = "<PASSWORD>"`` keeps
the shape of the code; template variables, parameters, type annotations and settings about passwords
(``password=${DB_PASSWORD}``, ``password: str``, ``password_min_length = 12``) are left alone, and so is
prose that merely talks about passwords, keys or tokens. Every pattern uses bounded repetition (no nested
unbounded quantifiers) and key blocks are found with ``str.find``, so the cost stays linear in the text
length; each recognizer has a cheap ``may_match`` pre-check implied by all of its patterns, which the fast
path in tasks/data/pii/prechecks.py uses to skip it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Iterable, Optional

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, LocalRecognizer, RecognizerResult


Check = Callable[[str, "re.Match[str]"], bool]


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_PLACEHOLDER = re.compile(  # template variables, parameters, empty and redacted values
    r"^(?:\$\{|\$[A-Za-z_]|\{\{|%\(|%[sd]$|:[A-Za-z_]\w*$|<|#\{|\{|\[|os\.|process\.env|env\(|getenv|input\(|"
    r"getpass|none$|null$|nil$|true$|false$|undefined$|\*+$|x+$|\.\.\.|…|changeme$|redacted$|secret$|password$|\?+$)",
    re.IGNORECASE,
)
_TYPE_NAME = re.compile(  # "password: str", "password: Optional[str] = None", "password: SecretStr"
    r"^(?:[A-Za-z_][\w.]*\[|(?:str|string|bytes|int|text|char|varchar|any|secretstr|secretbytes|optional|union)$)",
    re.IGNORECASE,
)
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{16,}")


def looks_random(value: str, min_len: int = 16, min_entropy: float = 3.0) -> bool:
    """A value that reads like a generated key rather than a word, a name or a path."""
    if len(value) < min_len or _PLACEHOLDER.match(value):
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    if not (has_digit and has_alpha):
        return False
    return shannon_entropy(value) >= min_entropy


_NOT_SECRET_KEY = re.compile(
    r"\b(?:length|len|min|max|minlength|maxlength|reset|policy|field|label|hint|prompt|strength|timeout|validators?|"
    r"expiry|expires|expiration|age|file|path|placeholder|regex|pattern|type|input|widget|required|manager|rules|"
    r"history|complexity|count|attempts|retries|protected|auth|authentication|less)\b",
    re.IGNORECASE,
)
_HOLDER_NAME = re.compile(r"^[A-Za-z_]*(?:password|passwd|pwd|pass|secret)$", re.IGNORECASE)


def _is_password_value(value: str, m: "re.Match[str]") -> bool:
    """Whether the value after a password-like name is a password rather than a setting, a variable or prose."""
    groups = m.groupdict()
    key = groups.get("key") or ""
    if key and _NOT_SECRET_KEY.search(re.sub(r"[_.\-]", " ", key)):
        return False  # password_min_length = 12, PASSWORD_RESET_TIMEOUT = 3600
    value = value.strip()
    if not value or _PLACEHOLDER.match(value):
        return False
    if groups.get("s1") is not None or groups.get("s2") is not None:
        return True  # a quoted literal
    if key.lower().endswith("pwd") and value[:1] in "/~":
        return False  # $PWD is the working directory
    if _HOLDER_NAME.match(value) or _DOTTED_NAME.match(value) or m.string[m.end() : m.end() + 1] == "(":
        return False  # password=password, password=settings.DB_PASSWORD, password=get_password()
    if "=" in (groups.get("sep") or "="):
        return True
    if _TYPE_NAME.match(value):
        return False  # a type annotation
    # "name: value" is config or an e-mail ("Password: Summer2024!") -- but not prose ("your password: it must")
    line_end = m.string.find("\n", m.end())
    if not m.string[m.end() : line_end if line_end >= 0 else len(m.string)].strip():
        return True
    return any(c.isdigit() for c in value) or not value.isalpha() or value[1:] != value[1:].lower()


def _is_api_key_value(value: str, m: "re.Match[str]") -> bool:
    return looks_random(value)


def _is_sk_key(value: str, m: "re.Match[str]") -> bool:
    return bool(_ALNUM_RUN.search(value)) and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _is_token_value(value: str, m: "re.Match[str]") -> bool:
    return looks_random(value.rstrip("="), min_len=12, min_entropy=2.8)


class SecretPattern:
    """One regular expression; the reported span is its first matched group named s, s1, s2 ... or the match."""

    def __init__(self, name: str, regex: str, score: float, check: Optional[Check] = None, flags: int = 0,
                 hint: Optional[str] = None):
        self.name = name
        self.regex = re.compile(regex, flags)
        self.hint = hint  # a regex every match contains; the pattern is skipped on texts without it
        self.hint_re = re.compile(hint) if hint else None
        self.score = score
        self.check = check
        self.groups = [g for g in ("s", "s1", "s2", "s3") if g in self.regex.groupindex]

    def spans(self, text: str) -> Iterable[tuple[int, int]]:
        for m in self.regex.finditer(text):
            span = m.span()
            for g in self.groups:
                if m.group(g) is not None:
                    span = m.span(g)
                    break
            if span[0] == span[1]:
                continue
            if self.check is None or self.check(text[span[0] : span[1]], m):
                yield span


class SecretRecognizer(LocalRecognizer):
    """Regex recognizer for one secret entity type; see the module docstring."""

    ENTITY = ""
    PATTERNS: list[SecretPattern] = []
    HINT: Optional["re.Pattern[str]"] = None  # implied by every pattern; None means always run

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_entities=[self.ENTITY], supported_language=supported_language, context=[])

    def load(self) -> None:  # patterns are compiled at import
        pass

    def may_match(self, text: str) -> bool:
        return self.HINT is None or self.HINT.search(text) is not None

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        if entities and self.ENTITY not in entities:
            return []
        results = []
        for pattern in self.PATTERNS:
            if pattern.hint_re is not None and pattern.hint_re.search(text) is None:
                continue
            for start, end in pattern.spans(text):
                explanation = AnalysisExplanation(
                    recognizer=self.name, original_score=pattern.score, pattern_name=pattern.name,
                    textual_explanation=f"{self.ENTITY} matched by {pattern.name}",
                )
                results.append(RecognizerResult(
                    entity_type=self.ENTITY, start=start, end=end, score=pattern.score,
                    analysis_explanation=explanation,
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
                ))
        return EntityRecognizer.remove_duplicates(results)


_I = re.IGNORECASE
_END = r"(?![A-Za-z0-9_\-])"  # a token ends where its alphabet ends (\b fails after a trailing '-')


class ApiKeyRecognizer(SecretRecognizer):
    ENTITY = "API_KEY"
    _KEY_NAMES = (r"(?:api[_\-]?key|apikey|api[_\-]?secret|app[_\-]?secret|client[_\-]?secret|consumer[_\-]?secret|"
                  r"secret[_\-]?access[_\-]?key|secret[_\-]?key|access[_\-]?key(?:[_\-]?id)?|"
                  r"(?:auth|access|refresh|api|bearer|bot|session|private|personal[_\-]?access)[_\-]?token|"
                  r"x-api-key|signing[_\-]?key|encryption[_\-]?key|webhook[_\-]?secret|secret|token)")
    PATTERNS = [
        SecretPattern("aws access key id",
                      r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
                      0.9, hint="A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA|SCA|3T)"),
        SecretPattern("github token",
                      r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})" + _END,
                      0.95, hint="gh[pousr]_|github_pat_"),
        SecretPattern("gitlab token", r"\bglpat-[A-Za-z0-9_\-]{20,255}" + _END, 0.95, hint="glpat-"),
        SecretPattern("slack token", r"\bxox[abposre]-[A-Za-z0-9\-]{10,250}" + _END, 0.95, hint="xox"),
        SecretPattern("slack webhook",
                      r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]{4,20}/B[A-Za-z0-9_]{4,20}/[A-Za-z0-9]{8,64}",
                      0.95, hint="hooks\\.slack\\.com"),
        SecretPattern("sk- key",
                      r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:[a-z]{3}\d{2}-)?)?[A-Za-z0-9_\-]{20,255}" + _END,
                      0.85, _is_sk_key, hint="sk-"),
        SecretPattern("stripe secret key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,255}\b",
                      0.95, hint="k_(?:live|test)_"),
        SecretPattern("google api key", r"\bAIza[0-9A-Za-z_\-]{35}" + _END, 0.9, hint="AIza"),
        SecretPattern("hugging face token", r"\bhf_[A-Za-z0-9]{30,64}\b", 0.85, hint="hf_"),
        SecretPattern("npm token", r"\bnpm_[A-Za-z0-9]{36}\b", 0.9, hint="npm_"),
        SecretPattern("jwt", r"\beyJ[A-Za-z0-9_\-]{8,4096}\.eyJ[A-Za-z0-9_\-]{8,8192}\.[A-Za-z0-9_\-]{0,4096}",
                      0.9, hint="eyJ"),
        SecretPattern("authorization header",
                      r"(?i:authorization)[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
                      r"(?i:(?:bearer|basic|token|digest|apikey)\s{1,3})?(?P<s>[A-Za-z0-9\-._~+/]{12,4096}=*)",
                      0.8, _is_token_value, hint="(?i:authorization)"),
        SecretPattern("bearer token", r"\b(?i:bearer)\s{1,3}(?P<s>[A-Za-z0-9\-._~+/]{16,4096}=*)",
                      0.7, _is_token_value, hint="(?i:bearer)"),
        SecretPattern("key assignment",
                      _KEY_NAMES + r"[A-Za-z0-9_.\-]{0,30}[\"']?\s{0,3}(?::=|=>|[:=])\s{0,3}"
                      r"(?:[\"'](?P<s1>[^\"'\s]{16,512})[\"']|(?P<s2>[A-Za-z0-9_\-+/=.~]{16,512}))",
                      0.75, _is_api_key_value, _I, hint="(?i:key|secret|token)"),
    ]
    HINT = re.compile("|".join(f"(?:{p.hint})" for p in PATTERNS))


class PasswordRecognizer(SecretRecognizer):
    ENTITY = "PASSWORD"
    _KEY = r"(?P<key>(?:password|passwd|passphrase|pass_word|pwd|[a-z0-9]_pass)[A-Za-z0-9_.\-]{0,30})"
    PATTERNS = [
        SecretPattern("password assignment",
                      _KEY + r"[\"']?\s{0,3}(?P<sep>:=|=>|=|:)\s{0,3}"
                      r"(?:\"(?P<s1>[^\"\n]{1,256})\"|'(?P<s2>[^'\n]{1,256})'|(?P<s3>[^\s\"',;)\]}<>]{1,256}))",
                      0.8, _is_password_value, _I),
        SecretPattern("password xml element",
                      r"<(?:\w{1,20}:)?(?P<key>password|passwd|pwd)>(?P<s>[^<\s][^<\n]{0,255})</",
                      0.8, _is_password_value, _I),
        SecretPattern("password option",
                      r"--(?P<key>[A-Za-z\-]{0,20}(?:password|passwd))\s{1,3}(?P<s>[^\s\-\"'][^\s\"']{0,255})",
                      0.7, _is_password_value, _I),
    ]
    HINT = re.compile(r"pass|pwd", _I)


class _PemBlocks(SecretPattern):
    """BEGIN ... PRIVATE KEY ... END blocks, found with str.find: each BEGIN looks for its END only up to the
    next BEGIN (at most 40,000 characters on), so the cost stays linear however many BEGINs a text holds.
    Without an END line (a truncated file or excerpt) the header and base64 lines after BEGIN are reported."""

    MAX_BLOCK = 40_000

    def __init__(self):
        line_end = r"(?:[ \t]{0,8}(?:\r?\n|\\r\\n|\\n))"  # a real line break, or an escaped one inside a string
        super().__init__("private key block", r"-----BEGIN (?P<kind>[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?)-----", 1.0)
        line = r"(?:(?:Proc-Type|DEK-Info|Comment):[^\n\\]{0,200}|[A-Za-z0-9+/=]{1,4096}(?=[ \t]*(?:\r|\n|\\[rn]|$)))"
        self.body = re.compile(r"(?:[ \t]{0,8}[A-Za-z0-9+/=]{1,40000})?(?:" + line_end + r"{1,3}" + line + r")*")

    def spans(self, text: str) -> Iterable[tuple[int, int]]:
        begins = list(self.regex.finditer(text))
        for k, m in enumerate(begins):
            stop = min(begins[k + 1].start() if k + 1 < len(begins) else len(text), m.end() + self.MAX_BLOCK)
            end_line = f"-----END {m.group('kind')}-----"
            end = text.find(end_line, m.end(), stop)
            if end >= 0:
                yield m.start(), end + len(end_line)
            else:
                yield m.start(), self.body.match(text, m.end()).end()


class PrivateKeyRecognizer(SecretRecognizer):
    ENTITY = "PRIVATE_KEY"
    PATTERNS = [_PemBlocks()]
    HINT = re.compile(r"PRIVATE KEY")


class ConnectionStringRecognizer(SecretRecognizer):
    ENTITY = "CONNECTION_STRING"
    PATTERNS = [
        SecretPattern("url with credentials",
                      r"\b[A-Za-z][A-Za-z0-9+.\-]{1,30}://[^\s:/@\"'<>]{0,256}:[^\s@/\"'<>]{1,256}"
                      r"@[^\s/?#\"'<>@]{1,256}"
                      r"(?:[/?#][^\s\"'<>]{0,2048})?", 0.9),
    ]
    HINT = re.compile(r"://")


SECRET_RECOGNIZERS = [ApiKeyRecognizer, PasswordRecognizer, PrivateKeyRecognizer, ConnectionStringRecognizer]


def secret_recognizers(language: str = "en") -> list[SecretRecognizer]:
    """One instance of each secrets recognizer, to add to an AnalyzerEngine's registry."""
    return [cls(supported_language=language) for cls in SECRET_RECOGNIZERS]
