"""The name rules (``pii.name_rules``, tasks/data/pii/names.py): person names the small spaCy model leaves are
scrubbed after a cue word or as a census first name, while places, dates, awards and common words stay.

The sentences are written for these tests in the forms the rules claim to cover; the rates on data written by
others (presidio-research, WNUT-17) are bench/pii.py's and test_pii_benchmark_leaks.py's.
"""

from __future__ import annotations

import pytest

from tasks.data.pii.names import AMBIGUOUS, first_names
from tasks.data.pii.scrub import scrub_texts
from tasks.data.pii.settings import PiiSettings

# the small model, which leaves more names for the rules to find; the rules themselves read only the text and the
# doc's entities, whichever model made them
SM = "en_core_web_sm"
ON = PiiSettings(entities=["PERSON"], spacy_model=SM)
OFF = PiiSettings(entities=["PERSON"], spacy_model=SM, name_rules=False)

NAMED = [
    # after a cue: any capitalised words, or a lower-case census name after "name is"
    ("My name is Akinori", "Akinori"),
    ("What's your last name? Boyle", "Boyle"),
    ("hi, my name is patricia and I need help", "patricia"),
    ("Antti Poutiainen, but everyone calls me Ansku.", "Ansku"),
    ("I would like to remove my kid Tadzio from the will.", "Tadzio"),
    ("I sent it to my colleague Szabina.", "Szabina"),
    ("Thanks, Mx. Sandgreen", "Sandgreen"),
    ("Mystery & Suspense. Directed By: Johannes Varvio", "Johannes Varvio"),
    ("Dear Aloisia,\nthank you for the parcel.", "Aloisia"),
    ("Hi Ingeborg, see below", "Ingeborg"),
    ("Thanks for the call.\n\nKind regards,\nMuslija", "Muslija"),
    ("\"Not again,\" said Erle.", "Erle"),
    # a census first name, with the capitalised words after it
    ("Send the invoice to Gladys.", "Gladys"),
    ("Send it to Brandi Daigle.", "Brandi Daigle"),
]

KEPT = [
    # places, dates, awards, organisations named after someone, common words capitalised
    "We flew from San Francisco to Virginia Beach in May.",
    "He received the Victoria Cross and the Branch Rickey Award.",
    "Will you hope for a grant, Frank? Grace periods end in June.",
    "The USS Trenton left Fort Lincoln on Sunday.",
    "My name was erased from the list.",
    "They visited Notre Dame Cathedral and the Louvre.",
    "Temperature 9 C, Min : 9 C, wind from the north.",
    "Meet at Dr L 8 J 2 M 7 at 08:30.",
    "The Irish team played the Roman legion in a costume match.",
]


@pytest.mark.parametrize("text,name", NAMED)
def test_names_the_ner_leaves_are_scrubbed(text, name):
    plain, _ = scrub_texts([text], OFF)[0]
    scrubbed, found = scrub_texts([text], ON)[0]
    assert name in plain, "the small model finds this one itself: the case no longer tests the rules"
    assert name not in scrubbed and found["PERSON"] >= 1, scrubbed


@pytest.mark.parametrize("text", KEPT)
def test_places_dates_awards_and_words_are_left(text):
    assert scrub_texts([text], ON)[0][0] == scrub_texts([text], OFF)[0][0]


def test_census_list_drops_common_words_but_keeps_frequent_names():
    names = first_names()
    assert len(names) > 4000
    assert {"Tiffany", "Marcus", "Gladys", "Patricia", "Dexter"} <= names
    assert not {"Will", "May", "Hope", "Grant", "Honey", "Princess", "Chase"} & names
    assert {"Will", "May", "Hope"} <= AMBIGUOUS


def test_social_handles_only_when_asked():
    text = "Great show tonight @jaketapper, see you at the venue. Mail me at ana@example.org"
    assert "@jaketapper" in scrub_texts([text], ON)[0][0]
    scrubbed, found = scrub_texts([text], PiiSettings(entities=["PERSON"], spacy_model=SM, social_handles=True))[0]
    assert "@jaketapper" not in scrubbed and "<PERSON>" in scrubbed
    assert "ana@example.org" in scrubbed  # an e-mail address is no handle (EMAIL_ADDRESS was not asked for)


def test_the_rules_find_the_same_with_both_engines():
    texts = [t for t, _ in NAMED] + KEPT
    fast = [t for t, _ in scrub_texts(texts, ON)]
    presidio = [t for t, _ in scrub_texts(texts, PiiSettings(entities=["PERSON"], spacy_model=SM, engine="presidio"))]
    assert fast == presidio


@pytest.mark.parametrize("engine", ["fast", "presidio"])
def test_error_codes_the_ner_takes_for_names_and_places_are_left(engine):
    # en_core_web_md (the default model) reads these error codes as names (E417, E131) and places (E305); a name
    # holds no digit, and a place of the NER no code
    codes = ["If the robot shows E417, clear the lidar window.", "Error E131 means the battery is low.",
             "KR-Carrier 450, error E305."]
    raw = PiiSettings(entities=["PERSON", "LOCATION"], name_rules=False, engine=engine)
    assert all("<PERSON>" in text or "<LOCATION>" in text for text, _ in scrub_texts(codes, raw))
    assert [t for t, _ in scrub_texts(codes, PiiSettings(entities=["PERSON", "LOCATION"], engine=engine))] == codes
    assert scrub_texts(["She moved from Paris to Berlin."], PiiSettings(engine=engine))[0][0] == \
        "She moved from <LOCATION> to <LOCATION>."
