"""Fact extraction behind a small interface, with a deterministic local default (no model download).

The memory worker calls ``await extractor.extract(text)``. A model-backed extractor can replace
:class:`RuleBasedExtractor` later by satisfying :class:`FactExtractor`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from .store import Fact


class FactExtractor(Protocol):
    """Turns a user's message into facts worth remembering. Raise
    :class:`~smartflow_runtime.errors.ExtractionError` for a transient failure."""

    async def extract(self, text: str) -> Sequence[Fact]: ...


# (kind, pattern): the first matching pattern wins for a sentence. Patterns are about what the
# user says about themselves, which is what the scheduling agent needs to remember.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("identity", re.compile(r"\b(?:my name is|i am called|call me)\s+(?P<v>.+)", re.I)),
    ("preference", re.compile(r"\bi (?:prefer|like|love|enjoy|want)\s+(?P<v>.+)", re.I)),
    ("dislike", re.compile(r"\bi (?:dislike|hate|don't like|do not like|avoid)\s+(?P<v>.+)", re.I)),
    ("schedule", re.compile(r"\bi (?:usually|always|never|work|start|finish)\s+(?P<v>.+)", re.I)),
    ("reminder", re.compile(r"\b(?:remember|don't forget|do not forget) (?:that\s+)?(?P<v>.+)", re.I)),
    ("identity", re.compile(r"\bi(?: am|'m)\s+(?:a|an)\s+(?P<v>.+)", re.I)),
)
_SENTENCE = re.compile(r"(?<=[.!?;\n])\s+")


class RuleBasedExtractor:
    """Deterministic extractor: sentence split plus a few first-person patterns.

    Same input, same facts in the same order; duplicates removed. Facts are normalised
    (whitespace collapsed, trailing punctuation dropped) and prefixed with their kind's verb.
    """

    def __init__(self, *, max_facts: int = 20) -> None:
        self._max_facts = max_facts

    async def extract(self, text: str) -> Sequence[Fact]:
        return extract_facts(text, max_facts=self._max_facts)


def extract_facts(text: str, *, max_facts: int = 20) -> list[Fact]:
    facts: list[Fact] = []
    seen: set[str] = set()
    for sentence in _SENTENCE.split(text.strip()):
        for kind, pattern in _RULES:
            match = pattern.search(sentence)
            if match is None:
                continue
            value = " ".join(match.group("v").split()).rstrip(" .!?;,")
            if value:
                fact = f"{kind}: {value}"
                if fact.lower() not in seen:
                    seen.add(fact.lower())
                    facts.append(Fact(kind=kind, text=fact))
            break
        if len(facts) >= max_facts:
            break
    return facts
