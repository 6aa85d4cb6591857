"""The decision → rows rules and the row encoding, without a database."""

from __future__ import annotations

import json

import pytest

from training.services.mapping import (
    Decision,
    RowEncoder,
    decision_texts,
    edit_size,
    item_rows,
    lineage_item_json,
    lineage_line,
    normalised_prompt,
    split_of,
    substantive,
)


def decision(**fields) -> Decision:
    base = {
        "item_id": 1,
        "external_id": "x",
        "prompt": "Q",
        "messages": None,
        "outcome": "accepted",
        "source": "unanimous",
        "final_candidate_id": 10,
        "final_text": "A",
        "preferred_candidate_id": None,
        "tie": False,
        "agreement": 1.0,
        "decided_by_id": None,
        "candidate_ids": (10,),
        "candidate_outputs": ("A",),
    }
    return Decision(**{**base, **fields})


def texts_of(d: Decision, **kwargs):
    t = decision_texts(d, **kwargs)
    return (
        t.decision,
        [g.text for g in t.good],
        [b.text for b in t.bad],
        [(c.text, r.text) for c, r in t.pairs],
    )


def test_edit_size_ignores_whitespace_and_measures_the_changed_span():
    assert edit_size("Hello world", "Hello  world\n") == 0
    assert edit_size("Hello world", "Helloworld") == 0
    assert edit_size("The cat sat", "The dog sat") == 3
    assert edit_size("abc", "abcd") == 1
    assert edit_size("", "new") == 3


def test_a_whitespace_edit_is_not_substantive_unless_the_minimum_is_zero():
    assert not substantive("A b", "A  b", 1)
    assert substantive("A b", "A  b", 0)
    assert substantive("cat", "cut", 1)
    assert not substantive("cat", "cut", 2)
    assert not substantive("same", "same", 0)


def test_an_accepted_output_is_good_with_nothing_bad():
    assert texts_of(decision()) == ("accept", ["A"], [], [])


def test_a_correction_is_good_and_its_original_bad_and_paired():
    d = decision(final_text="A, fixed")
    assert texts_of(d) == ("correct", ["A, fixed"], ["A"], [("A, fixed", "A")])


def test_a_whitespace_correction_keeps_the_edit_but_makes_no_negative():
    d = decision(final_text="A \n")
    assert texts_of(d) == ("correct", ["A \n"], [], [])
    assert texts_of(d, min_edit_chars=0) == ("correct", ["A \n"], ["A"], [("A \n", "A")])


def test_the_minimum_edit_is_configurable():
    d = decision(candidate_outputs=("The cat sat.",), final_text="The cot sat.")
    assert texts_of(d, min_edit_chars=1)[3] == [("The cot sat.", "The cat sat.")]
    assert texts_of(d, min_edit_chars=5)[3] == []


def test_a_rejection_makes_the_rejected_outputs_bad():
    d = decision(outcome="rejected", final_candidate_id=None, final_text="")
    assert texts_of(d) == ("reject", [], ["A"], [])


def test_a_rejection_naming_one_of_two_outputs_makes_only_that_one_bad():
    d = decision(
        outcome="rejected",
        final_candidate_id=None,
        final_text="",
        candidate_ids=(10, 11),
        candidate_outputs=("A", "B"),
        rejected_candidate_ids=(11,),
    )
    assert texts_of(d)[2] == ["B"]
    assert texts_of(decision(**{**d.__getstate__(), "unnamed_reject": True}) if False else d)
    unnamed = d._replace(rejected_candidate_ids=(), unnamed_reject=True)
    assert texts_of(unnamed)[2] == ["A", "B"]


def test_a_comparison_pairs_the_winner_with_the_loser():
    d = decision(
        candidate_ids=(10, 11),
        candidate_outputs=("A", "B"),
        final_candidate_id=11,
        preferred_candidate_id=11,
        final_text="B",
    )
    assert texts_of(d) == ("compare", ["B"], ["A"], [("B", "A")])


def test_a_corrected_winner_is_paired_with_its_original_and_the_loser():
    d = decision(
        candidate_ids=(10, 11),
        candidate_outputs=("A", "B"),
        final_candidate_id=11,
        preferred_candidate_id=11,
        final_text="B, better",
    )
    assert texts_of(d) == (
        "compare",
        ["B, better"],
        ["B", "A"],
        [("B, better", "B"), ("B, better", "A")],
    )


def test_a_tie_makes_both_outputs_good_and_no_pair():
    d = decision(
        candidate_ids=(10, 11),
        candidate_outputs=("A", "B"),
        final_candidate_id=None,
        final_text="",
        tie=True,
    )
    assert texts_of(d) == ("tie", ["A", "B"], [], [])


def test_a_tie_with_a_correction_pairs_it_only_with_its_own_original():
    d = decision(
        candidate_ids=(10, 11),
        candidate_outputs=("A", "B"),
        final_candidate_id=10,
        final_text="A, fixed",
        tie=True,
    )
    assert texts_of(d) == ("tie", ["A, fixed", "B"], ["A"], [("A, fixed", "A")])


def test_an_adjudicators_own_text_without_a_base_output_has_no_negative():
    d = decision(
        candidate_ids=(10, 11),
        candidate_outputs=("A", "B"),
        final_candidate_id=None,
        final_text="Written by the manager",
        source="adjudicated",
    )
    assert texts_of(d) == ("correct", ["Written by the manager"], [], [])


def test_an_adjudicators_text_on_a_single_output_item_corrects_that_output():
    d = decision(final_candidate_id=None, final_text="Written", source="adjudicated")
    assert texts_of(d) == ("correct", ["Written"], ["A"], [("Written", "A")])


def test_empty_texts_and_bad_texts_equal_to_a_good_one_are_dropped():
    d = decision(
        candidate_ids=(10, 11),
        candidate_outputs=("A", "A"),
        final_candidate_id=10,
        preferred_candidate_id=10,
        final_text="A",
    )
    assert texts_of(d) == ("compare", ["A"], [], [])
    assert texts_of(decision(candidate_outputs=("  ",), final_text="")) == ("accept", [], [], [])


HOSTILE = 'Quote " backslash \\ newline \n tab \t unicode é ☃ \u2028 <script>alert(1)</script>'


CHATS = [
    None,
    [{"role": "user", "content": HOSTILE}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
]


@pytest.mark.parametrize("system_prompt", ["", "Be kind."])
@pytest.mark.parametrize(
    ("conversational", "messages"),
    [(False, None), *((True, chat) for chat in CHATS)],
    ids=["standard", "text-as-chat", "chat", "chat-with-system"],
)
def test_rows_are_exactly_what_json_dumps_gives(conversational, system_prompt, messages):
    encoder = RowEncoder(conversational=conversational, system_prompt=system_prompt)
    item = encoder.item(HOSTILE, messages)
    texts = decision_texts(
        decision(prompt=HOSTILE, candidate_outputs=(HOSTILE,), final_text=HOSTILE + " fixed")
    )
    produced = list(item_rows(texts, item, frozenset({"sft", "preference", "kto"})))
    assert [kind for kind, _, _ in produced] == ["sft", "preference", "kto", "kto"]

    def dumps(row):
        return json.dumps(row, ensure_ascii=False, separators=(",", ":"))

    good, bad = HOSTILE + " fixed", HOSTILE
    if conversational:
        chat = encoder.prompt_messages(HOSTILE, messages)
        if system_prompt and not messages:
            assert chat[0] == {"role": "system", "content": "Be kind."}
        if messages and messages[0]["role"] == "system":
            assert chat == messages  # a chat's own system message is kept, not doubled

        def answer(text):
            return [{"role": "assistant", "content": text}]

        expected = [
            {"messages": [*chat, *answer(good)]},
            {"prompt": chat, "chosen": answer(good), "rejected": answer(bad)},
            {"prompt": chat, "completion": answer(good), "label": True},
            {"prompt": chat, "completion": answer(bad), "label": False},
        ]
    else:
        expected = [
            {"prompt": HOSTILE, "completion": good},
            {"prompt": HOSTILE, "chosen": good, "rejected": bad},
            {"prompt": HOSTILE, "completion": good, "label": True},
            {"prompt": HOSTILE, "completion": bad, "label": False},
        ]
    assert [line for _, line, _ in produced] == [dumps(row) for row in expected]


@pytest.mark.parametrize(
    ("agreement", "adjudicator", "guidelines"),
    [(1.0, None, (None, 2)), (2 / 3, 5, ()), (None, 7, (1,))],
)
def test_lineage_lines_are_exactly_what_json_dumps_gives(agreement, adjudicator, guidelines):
    d = decision(
        external_id=HOSTILE,
        agreement=agreement,
        decided_by_id=adjudicator,
        review_ids=(3, 4),
        expert_ids=(8, 9),
        guideline_versions=guidelines,
    )
    line = lineage_line(12, ["final", "candidate:10"], lineage_item_json(d, "correct"))
    assert line == json.dumps(
        {
            "row": 12,
            "texts": ["final", "candidate:10"],
            "item": HOSTILE,
            "item_id": 1,
            "decision": "correct",
            "outcome": "accepted",
            "outcome_source": "unanimous",
            "agreement": agreement,
            "adjudicated_by": adjudicator,
            "reviews": [3, 4],
            "experts": [8, 9],
            "guideline_versions": list(guidelines),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def test_edit_size_agrees_with_a_plain_character_scan():
    def scan(a, b):
        a, b = "".join(a.split()), "".join(b.split())
        if a == b:
            return 0
        start = 0
        while start < min(len(a), len(b)) and a[start] == b[start]:
            start += 1
        end = 0
        while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
            end += 1
        return max(len(a), len(b)) - start - end

    pairs = [("abcabc", "abcXabc"), ("aaaa", "aa"), ("xyz", "abc"), ("ab ba", "abba"), ("", "q")]
    pairs += [("the quick brown fox", "the quick red fox"), ("aXbXc", "aYbYc")]
    for a, b in pairs:
        assert edit_size(a, b) == scan(a, b), (a, b)


def test_prompts_differing_in_case_or_spacing_normalise_alike():
    assert normalised_prompt("What is  X?\n", None) == normalised_prompt("what is x?", None)
    chat = [{"role": "user", "content": "Hi  there"}]
    assert normalised_prompt("", chat) == normalised_prompt(
        "", [{"role": "user", "content": "hi there"}]
    )
    assert normalised_prompt("", chat) != normalised_prompt(
        "", [{"role": "system", "content": "hi there"}]
    )


def test_the_split_is_stable_depends_on_the_seed_and_respects_the_fraction():
    prompts = [f"prompt {n}" for n in range(2000)]
    first = [split_of(p, seed=7, eval_fraction=0.2) for p in prompts]
    assert first == [split_of(p, seed=7, eval_fraction=0.2) for p in prompts]
    assert 0.17 < first.count("eval") / len(first) < 0.23
    assert first != [split_of(p, seed=8, eval_fraction=0.2) for p in prompts]
    assert {split_of(p, seed=7, eval_fraction=0) for p in prompts} == {"train"}
    # Fixed points: a change to the hash would silently move rows between splits of
    # versions rebuilt later, so it must be noticed (and DATASET_FORMAT_VERSION bumped).
    assert [split_of(f"prompt {n}", seed=0, eval_fraction=0.5) for n in range(8)] == [
        "eval",
        "eval",
        "eval",
        "train",
        "train",
        "eval",
        "eval",
        "eval",
    ]


def test_spool_records_packed_a_block_at_a_time_are_structs_one_by_one():
    import hashlib

    from training.services.writer import _HASH_RECORD, hash_records

    for first in (0, 123_456, 2**31 - 5000):
        hashes = b"".join(
            hashlib.blake2b(str(n).encode(), digest_size=16).digest() for n in range(3000)
        )
        expected = b"".join(
            _HASH_RECORD.pack(4, 2, 2, 2, 1, 4, first + n, 16, hashes[16 * n : 16 * n + 16])
            for n in range(3000)
        )
        assert hash_records(2, 1, first, hashes) == expected
