"""Person names spaCy's NER leaves (en_core_web_sm a third of presidio-research's, most of them tagged ORG or
nothing; en_core_web_md a fifth): a name after a word that announces one ("my name is", "Dear", "Mr."), and a
capitalised first name of the US census list, alone or with the capitalised words after it, where spaCy saw no
place, date or number.

Works from the text and, where the analyzer has run the NER, from the doc's tokens and entities; it never
crosses a line break, and a name word is a capitalised word (or an initial) that is no stop word. The scrubber
also drops the NER's own "names" that hold a digit or are only weekdays and months (scrub._plausible_names).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_NAMES_FILE = Path(__file__).with_name("first_names.tsv")  # infra/first_names.py writes it

# Frequent first names that are also common English words, capitalised at a sentence start or in titles ("Will",
# "May", "Hope", "Grant", "Young"): a name after a cue only, as the rarer ones first_names.tsv marks common_word.
AMBIGUOUS = frozenset("""
Al An Art August April Bell Bill Brain Brook Buck Carry Chance Chase China Clay Cliff Crystal Dale Dawn Desire
Dick Don Drew Else Era Faith Forest Frank Gay German Glen Golden Grace Grant Guy Hope Hunter In Iris Ivy Jack
Joy June Kent King Lady Lance Lane Lee Loan Long Love Ma Major Man Many Mark Marshall Mason May Miles Miss Moon
My Noble Page Parker Pearl Penny Porter Prince Queen Ray Reed Rich Rose Royal Ruby Rusty Sandy Season See So Son
Song Soon Spring Star Sterling Summer Sun Sunny Tiny Un Van Wade Walker Ward Will Winter Young Irish Hang Ok Holy
America Roman Christian Le La Jan Cruz Violet Cornell Santa Paris Israel Jordan Georgia Virginia Florida Carolina
Dakota Sydney Asia India Egypt Kenya Lincoln Washington Houston Austin Dallas Denver Cleveland Orlando Phoenix
Savannah Madison
""".split())
# spaCy labels a rule may not turn into a name: places, dates, numbers and the like
_NOT_NAMES = frozenset({"GPE", "LOC", "FAC", "NORP", "DATE", "TIME", "MONEY", "QUANTITY", "CARDINAL", "ORDINAL",
                        "PERCENT", "EVENT", "LAW", "LANGUAGE"})
_TITLES = (r"Mr|Mrs|Ms|Mx|Dr|Prof|Rev|Sr|Sra|Srta|Fr|Herr|Frau|Mme|Mlle|Monsieur|Madame|Señor|Señora|Signor|"
           r"Signora|Sir|Mister|Doctor|Professor|Judge|Senator|Officer|Captain|Detective|Aunt|Uncle")
_KIN = (r"kid|son|daughter|wife|husband|partner|spouse|friend|boyfriend|girlfriend|brother|sister|mother|father|mom|"
        r"mum|dad|uncle|aunt|cousin|grandmother|grandfather|grandma|grandpa|nephew|niece|boss|colleague|coworker|"
        r"neighbou?r|roommate|fianc[eé]e?|child|teacher|lawyer|manager|assistant|client|patient|tenant|landlord")
# a cue and whether lower-case words may follow it ("my name is borna")
_CUES = [
    (re.compile(r"(?i)\b(?:(?:first|last|full|middle|maiden|family|given|sur|nick|user|real)[ \t]?)?name[ \t]*"
                r"(?:is|was|'s|’s|:|=|\?)[ \t]*(?:\"|“|')?"), True),
    (re.compile(r"(?i)\b(?:calls?[ \t]+me|called[ \t]+me|i[ \t]+am[ \t]+called|goes[ \t]+by|named)[ \t]+"), False),
    (re.compile(rf"\b(?:{_TITLES})\b\.?[ \t]+"), False),
    (re.compile(rf"(?i)\b(?:my|our|his|her|their|your)[ \t]+(?:{_KIN})[ \t,]+"), False),
    (re.compile(r"(?i)\b(?:said|asked|replied|answered|whispered|shouted)[ \t]+"), False),
    (re.compile(r"(?i)\b(?:written|directed|produced|composed|performed|illustrated|edited|translated|narrated|"
                r"photographed|signed)[ \t]+by:?[ \t]+"), False),
    (re.compile(r"(?:^|(?<=\n)|(?<=[.!?][ \t]))[ \t>]*(?:Dear|Hi|Hello|Hey|Thanks|Thank you|Congratulations|"
                r"Goodbye|Bye)[ \t]+(?=[^\W\d_][^,!:\n]{0,40}[,!:\n])"), False),
    (re.compile(r"(?im)^[ \t>]*(?:sincerely|regards|best regards|kind regards|best wishes|yours truly|cheers|"
                r"thanks|thank you|love|warmly|respectfully),?[ \t]*\n[ \t>]*"), False),
]
# months and weekdays: no name word
_CALENDAR = frozenset("""
January February March April May June July August September October November December Jan Feb Mar Apr Jun Jul Aug Sep
Sept Oct Nov Dec Monday Tuesday Wednesday Thursday Friday Saturday Sunday Mon Tue Tues Wed Thu Thurs Fri Sat Sun
""".split())
# words that make a capitalised run a place, an organisation or an award rather than a person
_THING_WORDS = frozenset("""
Award Awards Prize Medal Trophy Cup Monument Memorial Music Records Studios Sports Complex Club Center Centre Street
Avenue Road Boulevard Square University College School Academy Hospital Church Cathedral Chapel Park Bridge Hall House
Building Tower Museum Gallery Library Foundation Institute Company Corporation Corp Inc Ltd LLC Group Press Books Fund
Trust Stadium Arena Theatre Theater Airport Station County City River Lake Island Islands Beach Valley Mountain Hills
Renaissance Festival Series Show Band Cross Orchestra Act Law Lecture Republican Republicans Democrat Democrats Party
Highway Canal Bay Harbour Harbor Port Fort Castle Palace Temple Mosque Synagogue Hotel Motel Restaurant
""".split())
# words before a capitalised name that make it a place or a ship ("San Francisco", "USS Trenton")
_PLACE_BEFORE = frozenset("San Santa Santo São Sao St St. Sta Sta. Ste Saint Fort Ft Lake Mount Mt Port Cape Villa "
                          "USS HMS HMAS".split())
_MENTION = re.compile(r"(?<![\w@.])@[A-Za-z0-9_]{1,15}(?![\w@])")  # a social-media handle
_WORD = re.compile(r"[^\W\d_][\w'’-]*\.?|[A-Z]\.")
_GAP = re.compile(r"[ \t]+")


def is_calendar(span: str) -> bool:
    """Whether every word of ``span`` is a month or a weekday (or their abbreviations)."""
    words = re.findall(r"[^\W\d_]+", span)
    return bool(words) and all(w in _CALENDAR for w in words)


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """The census first names the rules take without a cue: all but the common words."""
    rows = [line.split("\t") for line in _NAMES_FILE.read_text(encoding="utf-8").splitlines()[2:] if line]
    return frozenset(name for name, _, common in rows if common == "0" and name not in AMBIGUOUS)


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def _is_name_word(word: str, lower_ok: bool) -> bool:
    """A capitalised word that is no stop word, month or weekday; with ``lower_ok`` also a census first name in
    lower case ("my name is patricia")."""
    core = word.rstrip(".")
    if not core or core.lower() in _stop_words() or core in _CALENDAR:
        return False
    if core[0].isupper():
        return not (len(core) > 3 and core.isupper())  # "NASA", "ATTN" are no names; "JR", "Li" may be
    return lower_ok and core.title() in first_names()


def _name_after(text: str, at: int, lower_ok: bool, most: int = 3) -> tuple[int, int] | None:
    """The span of one to ``most`` name words starting at ``at`` (on one line), or None."""
    end, pos, words, last = None, at, 0, ""
    while words < most:
        m = _WORD.match(text, pos)
        if not m or not _is_name_word(m.group(), lower_ok and words == 0):
            break
        words, last = words + 1, m.group().rstrip(".")
        end = m.end() - (1 if m.group().endswith(".") and len(m.group()) > 2 else 0)
        gap = _GAP.match(text, m.end())
        if not gap:
            break
        pos = gap.end()
    if end is None or end - at < 2 or (end - at == 2 and text[at + 1] == "."):
        return None  # a lone initial is no name
    nxt = _WORD.match(text, pos) if words else None
    if last in _THING_WORDS or (nxt and nxt.group().rstrip(".") in _THING_WORDS):
        return None  # "Rickey Award", "Notre Dame Cathedral"
    return at, end


class NameFallback:
    """PERSON spans the NER missed (see the module docstring); ``doc`` is the analyzer's spaCy doc, if any."""

    ENTITY = "PERSON"
    SCORE = 0.5

    def __init__(self, handles: bool = False):
        self.handles = handles

    def may_match(self, text: str) -> bool:
        return True

    def spans(self, text: str, doc=None) -> list[tuple[int, int]]:
        out = []
        for cue, lower_ok in _CUES:
            for m in cue.finditer(text):
                found = _name_after(text, m.end(), lower_ok)
                if found:
                    out.append(found)
        if self.handles and "@" in text:
            out += [m.span() for m in _MENTION.finditer(text)]
        if doc is not None:
            out += self._census_names(doc)
        return sorted(set(out))

    @staticmethod
    def _census_names(doc) -> list[tuple[int, int]]:
        """A capitalised census first name with up to two capitalised words or initials after it, outside the
        entities spaCy labelled as places, dates or numbers, not after "San", "Fort", "USS" and the like, and not
        before a word that makes it a thing ("Award", "Street", "Records")."""
        names = first_names()
        toks = list(doc)  # one Token object per token (doc[i] makes a new one on every call)
        words = [t.text for t in toks]
        if not any(w in names for w in words):
            return []
        blocked = set()
        for ent in doc.ents:
            if ent.label_ in _NOT_NAMES:
                blocked.update(range(ent.start, ent.end))
        out = []
        i, n = 0, len(toks)
        while i < n:
            word = words[i]
            if i in blocked or word not in names or word in _CALENDAR or (i and words[i - 1] in _PLACE_BEFORE):
                i += 1
                continue
            j = i + 1  # the words that follow on the same line, with a space between
            while j < n and j - i <= 2 and j not in blocked and toks[j - 1].whitespace_ == " " \
                    and _is_name_word(words[j], False):
                j += 1
            if words[j - 1].rstrip(".") not in _THING_WORDS and (j >= n or words[j] not in _THING_WORDS):
                out.append((toks[i].idx, toks[j - 1].idx + len(words[j - 1])))
            i = j
        return out

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
        from presidio_analyzer import AnalysisExplanation, RecognizerResult

        if entities and self.ENTITY not in entities:
            return []
        doc = getattr(nlp_artifacts, "tokens", None)
        if doc is not None and not hasattr(doc, "ents"):
            doc = None
        return [RecognizerResult(self.ENTITY, start, end, self.SCORE, analysis_explanation=AnalysisExplanation(
                    recognizer=type(self).__name__, original_score=self.SCORE,
                    textual_explanation="a name after a cue word, or a census first name"))
                for start, end in self.spans(text, doc)]
