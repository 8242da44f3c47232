"""The address rules (``pii.address_rules``): postal addresses the small spaCy model leaves are scrubbed as
LOCATION, and prose with numbers in it (dates, counts, product names) is left alone.

Figures on presidio-research's synth set and false positives on WikiText, self-instruct and tinyshakespeare:
bench/RESULTS.md (PII scrubbing) and tests/RELIABILITY.md (PII benchmark leaks).
"""

from __future__ import annotations

import pytest

from tasks.data.pii.fallbacks import AddressFallback
from tasks.data.pii.scrub import scrub_texts
from tasks.data.pii.settings import PiiSettings

RULES = AddressFallback()


def found(text: str) -> list[str]:
    return sorted(text[a:b] for a, b in RULES.spans(text))


@pytest.mark.parametrize("text, expected", [
    ("Send it to 221 Baker Street, London.", ["221 Baker Street"]),
    ("Our office: 1600 Amphitheatre Parkway, Mountain View", ["1600 Amphitheatre Parkway"]),
    ("Wohnt in der Augsburger Strasse 36 seit Mai", ["Augsburger Strasse 36"]),
    ("Adres: Parijsstraat 8, Zoetermeer", ["Parijsstraat 8"]),
    ("meet me at 6750 Koskikatu 25 tomorrow", ["6750 Koskikatu 25"]),
    ("She lives at Rue de Tanger 29, Tunis", ["Rue de Tanger 29"]),
    ("Tosh lives at 92597 Jahu 80, Liiva", ["92597 Jahu 80"]),
    ("The unit is Apt. 864 on the left", ["Apt. 864"]),
    ("write to P.O. Box 104 instead", ["P.O. Box 104"]),
    ("My zip code is 90010-170", ["90010-170"]),
    ("ZIP: 7412 SL", ["7412 SL"]),
    ("Forward it to PSC 4355, Box 4187\nAPO AP 28906", ["APO AP 28906", "PSC 4355, Box 4187"]),
])
def test_addresses_in_a_line_are_found(text, expected):
    assert found(text) == expected


def test_the_lines_below_a_street_finish_the_address_block():
    text = "Debra Neal\n\n3536 Hoog St\n Apt. 839\n Brakpan\n South Africa 70651\n\nThanks for the help!"
    assert found(text) == sorted(["3536 Hoog St", "Apt. 839", "Brakpan", "South Africa 70651"])
    quoted = "> Alma Jensen\n> 91215 Harjukuja 54\n> Suite 318\n> SEINÄJOKI\n> Finland 38524"
    assert found(quoted) == sorted(["91215 Harjukuja 54", "Suite 318", "SEINÄJOKI", "Finland 38524"])
    # a sentence after the street ends the block, and so does markup
    assert found("12 Hill Road\nWe will be there at noon, so please wait for us.") == ["12 Hill Road"]
    assert found("4201 Whittier Blvd\n</div>\n=20") == ["4201 Whittier Blvd"]


@pytest.mark.parametrize("text", [
    "On 17 November 2012 , the song debuted at number 3 .",
    "It was performed in 2001 at the Royal Court Theatre .",
    "It peaked at No. 63 on the Billboard 200 , while its first single",
    "During 1944 , the ships ' AA defences were reinforced during the refit .",
    "The 980 PRO SSD 2TB PCIe NVMe Gen 4 Gaming M.2 Internal Solid State Hard Drive",
    "185 killed and around 500 wounded during the Battle of Pusan",
    "route assigned as part of the 1930 renumbering of state highways",
    "Amount: $3.50\nCard Ending In\n6211\nMerchant\nBarron Restaurant",
    "the test suite 5 failed twice on a flat 5% load",
    "Writing from site KS03. Unit 18 (KR-Carrier) stopped at the dock.",  # a machine, not a flat
])
def test_prose_with_numbers_is_no_address(text):
    assert found(text) == []


def test_the_setting_turns_the_rules_on_and_off():
    text = "Ship the parcel to 23680 Parijsstraat 8\nApt. 026\nZoetermeer\nNetherlands 91196"
    scrubbed, counts = scrub_texts([text], PiiSettings(entities=["LOCATION"]))[0]
    for part in ("23680", "Parijsstraat", "Apt. 026", "Zoetermeer", "91196"):
        assert part not in scrubbed, scrubbed
    assert counts["LOCATION"] >= 3
    kept, _ = scrub_texts([text], PiiSettings(entities=["LOCATION"], address_rules=False))[0]
    assert "Parijsstraat 8" in kept and "Apt. 026" in kept
    # not asked for LOCATION: the rules find nothing
    assert scrub_texts([text], PiiSettings(entities=["EMAIL_ADDRESS"]))[0][0] == text
