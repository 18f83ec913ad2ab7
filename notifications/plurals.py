"""Counted nouns in the digests' two languages: "1 item", "3 items"; "بند واحد", "3 بنود", "11 بندًا".

Arabic chooses the noun's form by the number's plural category (Unicode CLDR's plural rules
for ``ar``: zero, one, two, few, many, other), and each category takes its own wording: the
noun alone with "واحد" for one, the dual for two, the broken plural for 3 to 10, the singular in
the accusative for 11 to 99, the singular for 100 and other. The digest templates put each
counted noun where Arabic reads it in the nominative (after a colon, in parentheses, as a
predicate), so one form per category is right; "run" is worded as the escalation reason uses it,
as an adverb ("failed twice": مرتين, in the accusative).

Written by hand: the rule is six lines of CLDR, and no library in the stack gives the worded
forms of a noun (Babel, not a dependency, gives the category only).
"""

from __future__ import annotations

from functools import lru_cache

#: Per noun, per CLDR plural category of Arabic, the wording ("{n}": the number in digits).
ARABIC_NOUNS: dict[str, dict[str, str]] = {
    "item": {"one": "بند واحد", "two": "بندان", "few": "{n} بنود", "many": "{n} بندًا", "other": "{n} بند"},
    "more item": {"one": "بند آخر", "two": "بندان آخران", "few": "{n} بنود أخرى", "many": "{n} بندًا آخر",
                  "other": "{n} بند آخر"},
    "day": {"one": "يوم واحد", "two": "يومان", "few": "{n} أيام", "many": "{n} يومًا", "other": "{n} يوم"},
    "working day": {"one": "يوم عمل واحد", "two": "يوما عمل", "few": "{n} أيام عمل", "many": "{n} يوم عمل",
                    "other": "{n} يوم عمل"},
    "run": {"one": "مرة واحدة", "two": "مرتين", "few": "{n} مرات", "many": "{n} مرة", "other": "{n} مرة"},
}


def arabic_category(n: int) -> str:
    """The CLDR plural category of the whole number ``n`` in Arabic ("zero", "one", "two",
    "few", "many" or "other"), from its absolute value. Rule: unicode.org CLDR
    ``plurals.xml``, locale ``ar``."""
    n = abs(n)
    if n in (0, 1, 2):
        return ("zero", "one", "two")[n]
    last_two = n % 100
    if 3 <= last_two <= 10:
        return "few"
    if 11 <= last_two <= 99:
        return "many"
    return "other"


@lru_cache(maxsize=1024)
def arabic_count(n: int, noun: str) -> str:
    """``n`` ``noun`` in Arabic (``noun`` a key of :data:`ARABIC_NOUNS`), e.g. (2, "day") ->
    "يومان", (11, "item") -> "11 بندًا"; zero takes the "other" wording ("0 بند").

    Raises:
        KeyError: ``noun`` is not in :data:`ARABIC_NOUNS`.
    """
    forms = ARABIC_NOUNS[noun]
    return forms.get(arabic_category(n), forms["other"]).format(n=n)


def english_count(n: int, noun: str) -> str:
    """``n`` ``noun`` in English, with an "s" unless ``n`` is 1 or -1, e.g. (1, "item") -> "1
    item", (3, "working day") -> "3 working days"."""
    return f"{n} {noun}" if abs(n) == 1 else f"{n} {noun}s"
