"""Fallback recognizers for what Presidio's own miss on presidio-research's benchmark: card numbers outside its
pattern (Luhn-checked, after a card cue word), national phone numbers after a cue, and postal addresses
(house number and street, unit, postal code after a cue, and the short lines of an address block).
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


# street types written after the name ("Main Street", "Via Roma" is before), in the languages of European and
# American addresses, and the endings of one-word street names ("Parijsstraat", "Koskikatu", "Lyngveien")
_STREET_TYPE = (r"St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Lane|Ln|Dr|Drive|Place|Pl|Way|Court|Ct|Square|Sq|"
                r"Terrace|Crescent|Close|Row|Highway|Hwy|Parkway|Pkwy|Circle|Cir|Trail|Alley|Plaza|Mews|Walk|Gardens")
_STREET_FIRST = (r"rue|chemin|impasse|allée|quai|via|viale|piazza|piazzale|corso|largo|vicolo|"
                 r"calle|carrer|avenida|paseo|rua|travessa|praça|largo|ul\.|ulica|aleja|al\.|os\.|"
                 r"utca|út|tér|strada|bulevardul|str\.")
_STREET_END = (r"straat|strasse|straße|str\.|gasse|weg|dreef|laan|plein|gracht|singel|allee|platz|damm|"
               r"vej|vejen|veien|vegen|gata|gatan|gaten|gade|torget|stien|stigen|bakken|väg|vägen|"
               r"katu|kuja|tie|polku|kaari|tér|utca|útja|út|ulica")
_STREET_WORD = r"Strasse|Straße|Str\.|Gasse|Weg|Allee|Platz|Damm|Straat|Laan|Vej|Gata|Gade|Utca|Street|Road|Avenue"
_WORD = r"[^\W\d_][\w'’.-]*"
_NAME = r"[^\W\d_][\w'’.-]+"  # two letters or more
# words an address may write in lower case between capitalised ones ("Rue de Tanger", "ul. Północna")
_PARTICLES = frozenset("de del della dei des du la le les l' van von der den di da do dos das y e i u. ul. al. os. "
                       "rue via viale calle carrer avenida rua av av. st st.".split())
_NOT_IN_ADDRESSES = frozenset("january february march april may june july august september october november december "
                              "jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday "
                              "friday saturday sunday".split())
_NUMBER = r"\d{1,6}[A-Za-z]?\b\.?"


class AddressFallback(_Fallback):
    """Postal addresses spaCy's small model leaves (71% of presidio-research's street addresses, all its postal
    codes): a house number with a street ("221B Baker Street", "23680 Parijsstraat 8", "Via Roma 12"), a unit
    ("Apt. 839", "Suite 041", "P.O. Box 104"), a postal code after a cue word ("ZIP: 7412 SL"), and, below a
    street or unit line, the short lines that finish the address block (town, region, country and code)."""

    ENTITY = "LOCATION"
    SCORE = 0.5
    MIN_DIGITS = 1
    _STREET = re.compile(
        rf"(?<![\w.-])\d{{1,6}}[A-Za-z]?,?[ \t]+(?:{_WORD}[ \t]+){{0,4}}?(?:(?:{_STREET_TYPE})\b\.?|{_WORD}(?i:{_STREET_END})\b)"
        rf"(?:[ \t]+{_NUMBER})?"
        rf"|(?<![\w.-])(?:{_WORD}[ \t]+){{0,2}}?{_WORD}(?i:{_STREET_END})[ \t]+{_NUMBER}"
        rf"|(?<![\w.-])(?:{_WORD}[ \t]+){{1,2}}(?:{_STREET_WORD})[ \t]+{_NUMBER}"
        rf"|(?<![\w.-])(?i:{_STREET_FIRST})[ \t]+(?:{_WORD}[ \t]+){{0,3}}?{_WORD},?[ \t]+{_NUMBER}"
        # a house number, one to three words and a number, ending the line or before a comma: "92597 Jahu 80,"
        rf"|(?<![\w.-])\d{{1,6}}[ \t]+(?:{_NAME}[ \t]+){{0,2}}{_NAME}[ \t]+\d{{1,5}}[A-Za-z]?\b\.?(?=[ \t]*(?:,|\n|$))"
        # US military mail: "PSC 4355, Box 4187", "APO AP 28906"
        rf"|\b(?:PSC|Unit|CMR)[ \t]+\d{{3,5}},[ \t]+Box[ \t]+\d{{1,5}}\b|\b(?i:APO|FPO|DPO)[ \t]+(?i:AA|AE|AP)[ \t]+\d{{5}}\b")
    _UNIT = re.compile(r"\b(?:[Aa]pt|APT|[Aa]partment|Suite|SUITE|Ste|STE|Flat|FLAT)\.?[ \t]*#?\d{1,5}[A-Za-z]?\b"
                       r"|\bP\.?\s?O\.?\s?Box\s+\d+\b|\bPostbox\s+\d+\b")
    _POSTCODE = re.compile(r"(?i)\b(?:zip(?:\s*code)?|post(?:al)?\s*code|postcode|postleitzahl|plz)\b"
                           r"(?:\s+is)?\s*[:#]?\s*([a-z]{0,2}\d[a-z0-9]{1,6}(?:[ -][a-z0-9]{2,4})?)\b")
    _QUOTE = re.compile(r"^[>\s?]*")
    _BLOCK_LINE = re.compile(r"[^.!?:;<>={}\n]{1,40}")  # no sentence end, no markup

    def spans(self, text: str) -> list[tuple[int, int]]:
        out = [self._trimmed(text, *m.span()) for m in self._STREET.finditer(text) if self._looks_like_street(m.group())]
        out += [m.span() for m in self._UNIT.finditer(text)]
        out += [m.span(1) for m in self._POSTCODE.finditer(text)]
        if "\n" in text and out:
            out += self._block_lines(text, out)
        return sorted(set(out))

    @staticmethod
    def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
        """Without the lower-case words the match began with ("der Augsburger Strasse 36")."""
        while True:
            word = re.match(r"[^\W\d_][\w'’]*[ \t]+", text[start:end])
            if not word or not word.group()[0].islower() or word.group().strip() in ("rue", "via", "ul", "calle", "rua"):
                return start, end
            start += word.end()

    @staticmethod
    def _looks_like_street(found: str) -> bool:
        """Names in an address are capitalised ("Royal Court" yes, "2001 at the Royal Court" no) and a date
        is no address ("17 November 2012,")."""
        for word in found.split():
            if word[0].isdigit():
                continue
            low = word.lower().rstrip(",.")
            if low in _NOT_IN_ADDRESSES:
                return False
            if not word[0].isupper() and low not in _PARTICLES and word.lower() not in _PARTICLES:
                return False
        return True

    def _block_lines(self, text: str, found: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The up to three short lines after the last line holding a street or unit, as long as each is short
        (at most 5 words, 40 characters) and no sentence: an address block's town, region, country, code."""
        lines, at = [], 0
        for line in text.split("\n"):
            lines.append((at, at + len(line)))
            at += len(line) + 1
        marked = {i for i, (a, b) in enumerate(lines) for s, e in found if s < b and a < e}
        out = []
        for i in sorted(marked):
            for j in range(i + 1, min(i + 4, len(lines))):
                if j in marked:
                    continue
                a, b = lines[j]
                body = text[a:b]
                a += len(self._QUOTE.match(body).group())
                line = text[a:b].strip()
                if not line:
                    continue
                if len(line.split()) > 5 or not self._BLOCK_LINE.fullmatch(line):
                    break
                start = text.index(line, a)
                out.append((start, start + len(line)))
        return out


def fallback_recognizers(language: str = "en", structured: bool = True, addresses: bool = True,
                         names: bool = False, handles: bool = False) -> list:
    """Presidio recognizers for the card and phone fallbacks (``structured``), the address rules and the name
    rules (tasks/data/pii/names.py; ``handles``: social-media handles too)."""
    from presidio_analyzer import LocalRecognizer

    from tasks.data.pii.names import NameFallback

    made = []
    impls = [*((CardNumberFallback(), PhoneFallback()) if structured else ()),
             *((AddressFallback(),) if addresses else ()), *((NameFallback(handles),) if names else ())]
    for impl in impls:

        class Recognizer(LocalRecognizer):
            fallback = impl

            def load(self) -> None:
                pass

            def may_match(self, text: str) -> bool:
                return self.fallback.may_match(text)

            def analyze(self, text, entities, nlp_artifacts=None):
                return self.fallback.analyze(text, entities, nlp_artifacts)

        name = type(impl).__name__
        Recognizer.__name__ = name
        made.append(Recognizer(supported_entities=[impl.ENTITY], supported_language=language, context=[], name=name))
    return made
