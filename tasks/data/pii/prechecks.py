"""Pre-checks: cheap tests implied by each recognizer's own patterns, so that a recognizer runs only on
texts where it could match (no 13 digits in a card's grouping, no credit card; the phone matcher only for
the regions whose valid numbers fit the text's digit runs).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache
from typing import Callable, NamedTuple

from tasks.data.pii.secrets import SecretRecognizer


# Each is implied by the recognizer's own patterns (boundaries and look-arounds dropped, alternatives merged),
# so a text it does not match cannot give that recognizer a result.
_CREDIT_CARD_HINT = re.compile(r"[13456]\d{3}[- ]?\d{3,4}[- ]?\d{3,4}[- ]?\d{3,5}")
_SSN_HINT = re.compile(r"[0-9]{5}-[0-9]{4}|[0-9]{3}-[0-9]{6}|[0-9]{3}[- .][0-9]{2}[- .][0-9]{4}|[0-9]{9}")
_IBAN_HINT = re.compile(r"[^\W\d_]{2}[0-9]{2}(?:[ -]?[^\W_]{4}){2}")  # the registry compiles it case-insensitive
_IP_HINT = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|::|[0-9A-Fa-f]:[0-9A-Fa-f]")  # IPv4, IPv6 forms


def _phone_run_pattern():
    from phonenumbers import phonenumbermatcher as pm
    from phonenumbers import phonenumberutil as pu

    # every character the matcher's candidate pattern (phonenumbermatcher._PATTERN) allows before an extension,
    # in a class written the way phonenumbers writes its own (its strings hold ranges and escapes)
    chars = pu._VALID_PUNCTUATION + pu._PLUS_CHARS + pm._OPENING_PARENS + pm._CLOSING_PARENS + "X\\d"
    return re.compile("[" + chars + "]+")


_DIGIT_GROUP = re.compile(r"\d+")


class _RegionBounds(NamedTuple):
    national: int  # fewest digits of a valid national significant number (its shortest possible length)
    lengths: frozenset  # the possible lengths of a national significant number
    stripped: float  # most digits parsing can strip before it (country code, national prefix twice)
    inserted: int  # most digits a national prefix transform rule can add (twice)
    idd_digits: int  # fewest digits of the international dialling prefix
    idd_zero: bool  # the international dialling prefix always starts with 0


def _sre_parse():
    try:
        import re._parser as sre_parse
    except ImportError:  # Python < 3.11
        import sre_parse  # type: ignore[no-redef]
    return sre_parse


def _regex_width(pattern: str) -> tuple[int, int]:
    return _sre_parse().parse(pattern).getwidth() if pattern else (0, 0)


def _always_starts_with_zero(pattern: str) -> bool:
    parsed = _sre_parse().parse(pattern) if pattern else []
    return len(parsed) > 0 and parsed[0] == (_sre_parse().LITERAL, ord("0"))


@lru_cache(maxsize=64)
def _phone_bounds(region: str) -> _RegionBounds | None:
    """What libphonenumber's metadata says about valid numbers of ``region``.

    A valid number's national significant number has one of the lengths in the region's general description
    (the validity check tests them first), and its digits are digits of the text, except that parsing may
    strip a leading country code and national prefix and a transform rule may add digits.
    """
    from phonenumbers.phonemetadata import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None or not meta.general_desc or not meta.general_desc.possible_length:
        return None
    prefix_width = _regex_width(meta.national_prefix_for_parsing or meta.national_prefix or "")[1]
    stripped = float("inf") if prefix_width >= 1_000 else len(str(meta.country_code)) + 2 * prefix_width
    literal = re.sub(r"\\g<\w+>|[\\$]\d", "", meta.national_prefix_transform_rule or "")
    idd = meta.international_prefix or ""
    lengths = frozenset(meta.general_desc.possible_length)
    return _RegionBounds(min(lengths), lengths, stripped, 2 * sum(c.isdigit() for c in literal),
                         _regex_width(idd)[0], _always_starts_with_zero(idd))


# Written after a plus sign, a valid number of any country shows at least 6 digits: country code and national
# number together, less any digits a transform rule inserts, are 6 or more for every country (AT, DE, IR).
_PHONE_MIN_WITH_PLUS = 6
_PHONE_LONG_GROUP = 400  # the matcher's candidate pattern takes at most 21 blocks of 20 digits


class PhoneGate:
    """Presidio's PhoneRecognizer, run only for the regions where a valid number could fit the text.

    A run is a maximal stretch of the characters the phone matcher's candidates are made of (digits, its
    punctuation, plus signs and brackets), a group a maximal stretch of digits in it. The matcher's candidates
    and the parts it retries are whole groups, so a candidate's digits are consecutive groups of one run, and
    an international prefix can only open a group. Per run: a plus sign and 6+ digits, or a group starting
    with 0 (the first digit of these regions' international prefixes) and 8+ digits from it on, and any
    region may match; a single group of g digits can only be a
    national number of a region with a possible length in [g - stripped, g + inserted]; otherwise the run
    needs at least the region's shortest length. The recognizer's own results are kept as they are, less
    its explanation's region lookup (a second parse of each match).
    """

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.regions = tuple(recognizer.supported_regions)
        self.bounds = {r: _phone_bounds(r) for r in self.regions}
        self.runs = _phone_run_pattern()
        known = [b for b in self.bounds.values() if b is not None]
        # written with an international prefix: the prefix, then what a plus sign would need
        self.min_idd = min((b.idd_digits for b in known), default=0) + _PHONE_MIN_WITH_PLUS
        self.idd_zero = len(known) == len(self.bounds) and all(b.idd_zero for b in known)

    def _fits(self, region: str, digits: int, groups: int) -> bool:
        b = self.bounds[region]
        if b is None:
            return True
        if groups > 1:
            return digits >= b.national
        return any(digits - b.stripped <= n <= digits + b.inserted for n in b.lengths)

    def regions_for(self, text: str) -> tuple:
        needed: set = set()
        for m in self.runs.finditer(text):
            run = m.group()
            groups = _DIGIT_GROUP.findall(run)
            n = sum(map(len, groups))
            if n < 4:
                continue  # no region has a national number under 4 digits
            if n >= _PHONE_MIN_WITH_PLUS and ("+" in run or "\uff0b" in run):
                return self.regions
            rest = n
            for g in groups:
                if len(g) > _PHONE_LONG_GROUP or (rest >= self.min_idd and (
                        not self.idd_zero or unicodedata.decimal(g[0]) == 0)):
                    return self.regions
                rest -= len(g)
            needed.update(r for r in self.regions if r not in needed and self._fits(r, n, len(groups)))
            if len(needed) == len(self.regions):
                return self.regions
        return tuple(r for r in self.regions if r in needed)

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
        import phonenumbers
        from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult

        rec = self.recognizer
        results = []
        for region in self.regions_for(text):
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=rec.leniency):
                results.append(RecognizerResult(
                    entity_type=rec.supported_entities[0], start=match.start, end=match.end, score=rec.SCORE,
                    analysis_explanation=AnalysisExplanation(
                        recognizer=type(rec).__name__, original_score=rec.SCORE,
                        textual_explanation=f"Recognized as a phone number by the {region} region's matcher"),
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: rec.name,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: rec.id},
                ))
        return EntityRecognizer.remove_duplicates(results) if results else []


# The pre-checks above were derived from these recognizers' patterns as presidio-analyzer 2.2.366 ships them
# (sha256 of the regexes, one a line): a recognizer whose patterns differ runs without one.
_GATED_PATTERNS = {
    "EmailRecognizer": "004723abbb67ff6c",
    "CreditCardRecognizer": "f619fa242c932c37",
    "UsSsnRecognizer": "99e2c61f6a973b04",
    "IbanRecognizer": "1f98697e78e08d67",
    "IpRecognizer": "2e5b4e8ccce1e531",
}


def _patterns_digest(recognizer) -> str:
    regexes = "\n".join(p.regex for p in getattr(recognizer, "patterns", None) or [])
    return hashlib.sha256(regexes.encode()).hexdigest()[:16]


def gate_for(recognizer) -> Callable[[str], bool] | None:
    """A cheap test that is true whenever ``recognizer`` could find something (None: always run it)."""
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        UsSsnRecognizer,
    )

    if isinstance(recognizer, SecretRecognizer) or hasattr(recognizer, "fallback"):
        return recognizer.may_match
    gates = {
        EmailRecognizer: lambda t: "@" in t,
        CreditCardRecognizer: lambda t: _CREDIT_CARD_HINT.search(t) is not None,
        UsSsnRecognizer: lambda t: _SSN_HINT.search(t) is not None,
        IbanRecognizer: lambda t: _IBAN_HINT.search(t) is not None,
        IpRecognizer: lambda t: _IP_HINT.search(t) is not None,
    }
    cls = type(recognizer)
    if cls not in gates or getattr(recognizer, "deny_list", None):
        return None  # unknown to us, or a deny list, which matches words rather than these shapes
    if _patterns_digest(recognizer) != _GATED_PATTERNS[cls.__name__]:
        return None
    return gates[cls]


def phone_gate_applies(recognizer) -> bool:
    """PhoneGate's bounds hold for Presidio's PhoneRecognizer asking for valid numbers (leniency 1 or more)."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    return type(recognizer) is PhoneRecognizer and (recognizer.leniency or 0) >= 1
