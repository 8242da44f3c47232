"""Fallback recognizers for the structured values Presidio's own miss on presidio-research's benchmark: card
numbers outside its pattern (Luhn-checked, after a card cue word) and national phone numbers after a cue.
"""

from __future__ import annotations

import re


_ANY_DIGIT = re.compile(r"\d")


class _Fallback:
    """A recognizer for structured values Presidio's own recognizers miss (tests/test_pii_benchmark_leaks.py):
    the shape of the value, a checksum where there is one, and a cue word in the text around it."""

    ENTITY = ""
    MIN_DIGITS = 0  # implied by the pattern: the pre-check
    SCORE = 0.6

    def may_match(self, text: str) -> bool:
        return len(_ANY_DIGIT.findall(text)) >= self.MIN_DIGITS

    def spans(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
        from presidio_analyzer import AnalysisExplanation, RecognizerResult

        if entities and self.ENTITY not in entities:
            return []
        return [RecognizerResult(self.ENTITY, start, end, self.SCORE, analysis_explanation=AnalysisExplanation(
                    recognizer=type(self).__name__, original_score=self.SCORE,
                    textual_explanation=f"{self.ENTITY} by its shape and a cue word"))
                for start, end in self.spans(text)]


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


class CardNumberFallback(_Fallback):
    """Card numbers outside Presidio's pattern (Mastercard 2-series, 19-digit Visa, 12-19-digit Maestro, JCB
    2131/1800): a Luhn-valid run of 12-19 digits with an issuer prefix, after a card cue word."""

    ENTITY = "CREDIT_CARD"
    MIN_DIGITS = 12
    _RUN = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")
    _ISSUER = re.compile(r"4(?:\d{12}|\d{15}|\d{18})|5[1-5]\d{14}|2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"
                         r"|3[47]\d{13}|3(?:0[0-5]|[689]\d)\d{11,16}|(?:2131|1800)\d{11}|(?:5[06-9]|6\d)\d{10,17}")
    _CUE = re.compile(r"(?i)\b(?:card|cc|credit|debit|visa|mastercard|amex|maestro|jcb|diners|discover|payment|"
                      r"charge[sd]?)\b")

    def spans(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in self._RUN.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if self._ISSUER.fullmatch(digits) and _luhn(digits) and self._CUE.search(text, max(0, m.start() - 60),
                                                                                     m.start()):
                out.append((m.start(), m.end()))
        return out


class PhoneFallback(_Fallback):
    """National phone numbers whose region Presidio does not try (or cannot validate): a run of 7-15 digits
    in phone punctuation right after a phone cue ("Phone:", "Mobile:", "call me on", "answering at") or
    before one ("... office", "...-Fax"), or written with a bracketed area code."""

    ENTITY = "PHONE_NUMBER"
    SCORE = 0.5
    MIN_DIGITS = 7
    _RUN = re.compile(r"(?<![\w+.])\+?(?:\(\d{1,4}\)|\d)(?:[ .-]?(?:\(0\)|\(\d{1,4}\)|\d))*\d(?:\s?x\d{1,5})?(?![\w])")
    _BEFORE = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|desk|fax|office|call|calling|answering|"
                         r"messages?|registered|sms|whatsapp)\b(?:\s+(?:me|us|at|on|to|number|no\.?|is|my))*"
                         r"\s*[:#.]?\s*$")
    _AFTER = re.compile(r"(?i)\s*-?\s*(?:office|fax|mobile|cell|home|work|phone)\b")
    _BRACKETED = re.compile(r"\+?\(\d{2,4}\)[ .-]?\d")

    def spans(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in self._RUN.finditer(text):
            digits = sum(ch.isdigit() for ch in m.group().split("x")[0])
            if not 7 <= digits <= 15 or "\n" in m.group():
                continue
            if (self._BEFORE.search(text, max(0, m.start() - 40), m.start())
                    or self._AFTER.match(text, m.end()) or self._BRACKETED.match(m.group())):
                out.append((m.start(), m.end()))
        return out


def fallback_recognizers(language: str = "en") -> list:
    from presidio_analyzer import LocalRecognizer

    made = []
    for cls in (CardNumberFallback, PhoneFallback):
        impl = cls()

        class Recognizer(LocalRecognizer):
            fallback = impl

            def load(self) -> None:
                pass

            def may_match(self, text: str) -> bool:
                return self.fallback.may_match(text)

            def analyze(self, text, entities, nlp_artifacts=None):
                return self.fallback.analyze(text, entities, nlp_artifacts)

        Recognizer.__name__ = cls.__name__
        made.append(Recognizer(supported_entities=[cls.ENTITY], supported_language=language, context=[],
                               name=cls.__name__))
    return made
