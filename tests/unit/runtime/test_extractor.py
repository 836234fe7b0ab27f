"""The default fact extractor is deterministic and local."""

from __future__ import annotations

from smartflow_runtime.memory.extractor import RuleBasedExtractor, extract_facts
from smartflow_runtime.memory.store import Fact


def test_extracts_first_person_facts_in_order_without_duplicates() -> None:
    text = (
        "Hi! My name is Ada.  I prefer   meetings after 10am; I hate Mondays. I prefer meetings after 10am."
    )
    assert extract_facts(text) == [
        Fact("identity", "identity: Ada"),
        Fact("preference", "preference: meetings after 10am"),
        Fact("dislike", "dislike: Mondays"),
    ]


def test_same_input_same_output_and_nothing_from_small_talk() -> None:
    assert extract_facts("What a nice day.") == []
    assert extract_facts("I work from home on Fridays.") == extract_facts("I work from home on Fridays.")


def test_max_facts_bounds_the_result() -> None:
    text = ". ".join(f"I like thing {i}" for i in range(10))
    assert len(extract_facts(text, max_facts=3)) == 3


async def test_extractor_satisfies_the_async_interface() -> None:
    facts = await RuleBasedExtractor().extract("Remember that the demo is on Tuesday.")
    assert facts == [Fact("reminder", "reminder: the demo is on Tuesday")]
