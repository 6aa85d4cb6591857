"""The mapping between Label Studio results and Redline decisions, result type by type, and
the bad inputs it must refuse with a message that names the control."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from feedback.labelstudio.mapping import (
    CandidateView,
    MappingError,
    annotation_to_decision,
    labeling_config,
    result_sha256,
    task_data,
)

SCHEMA = [
    {"key": "tone", "prompt": "Tone?", "type": "single_choice", "options": ["neutral", "rude"]},
    {"key": "issues", "prompt": "Issues?", "type": "multiple_choice", "options": ["a", "b", "c"]},
    {"key": "helpful", "prompt": "Helpful?", "type": "rating", "scale": 7, "required": True},
    {"key": "notes", "prompt": "Notes?", "type": "text"},
]
ONE = [CandidateView(id=11, output="Paris is the capital.")]
TWO = [CandidateView(id=21, output="Answer A"), CandidateView(id=22, output="Answer B")]


def r(from_name, rtype, value):
    return {"from_name": from_name, "to_name": "prompt", "type": rtype, "value": value}


def decide(results, candidates=ONE, **extra):
    return annotation_to_decision(
        {"id": 1, "result": results, **extra}, candidates=candidates, label_schema=SCHEMA
    )


def test_edited_textarea_is_a_correction_of_the_single_output():
    d = decide([r("correction", "textarea", {"text": ["Paris is the capital of France."]})])
    assert (d.verdict, d.candidate, d.corrected_output) == (
        "correct",
        11,
        "Paris is the capital of France.",
    )


def test_unchanged_textarea_or_none_is_an_accept():
    assert decide([r("correction", "textarea", {"text": ["Paris is the capital. "]})]).verdict == (
        "accept"
    )
    d = decide([])
    assert (d.verdict, d.candidate, d.corrected_output) == ("accept", 11, "")


def test_multiline_textarea_joins_its_lines():
    d = decide([r("correction", "textarea", {"text": ["line one", "line two"]})])
    assert d.corrected_output == "line one\nline two"


def test_pairwise_left_and_right_prefer_the_first_and_second_output():
    left = decide([r("preference", "pairwise", {"selected": "left"})], TWO)
    right = decide([r("preference", "pairwise", {"selected": "right"})], TWO)
    assert (left.verdict, left.preferred_candidate, left.candidate) == ("accept", 21, 21)
    assert (right.preferred_candidate, right.candidate) == (22, 22)


def test_correction_on_a_pair_corrects_the_preferred_output():
    d = decide(
        [
            r("preference", "pairwise", {"selected": "right"}),
            r("correction", "textarea", {"text": ["Answer B, fixed"]}),
        ],
        TWO,
    )
    assert (d.verdict, d.candidate, d.corrected_output) == ("correct", 22, "Answer B, fixed")


def test_correction_on_a_pair_without_preference_is_refused():
    with pytest.raises(MappingError, match="without saying which output is better"):
        decide([r("correction", "textarea", {"text": ["new"]})], TWO)


def test_reject_choice_is_a_reject():
    d = decide([r("reject", "choices", {"choices": ["Reject"]})])
    assert (d.verdict, d.candidate) == ("reject", 11)


def test_choices_ratings_and_text_become_label_answers_and_the_overall_rating():
    d = decide(
        [
            r("label_tone", "choices", {"choices": ["rude"]}),
            r("label_issues", "choices", {"choices": ["c", "a"]}),
            r("label_helpful", "rating", {"rating": 6}),
            r("label_notes", "textarea", {"text": ["too curt"]}),
            r("rating", "rating", {"rating": 2.0}),
            r("rationale", "textarea", {"text": ["see notes"]}),
        ]
    )
    assert d.labels == {"tone": "rude", "issues": ["c", "a"], "helpful": 6, "notes": "too curt"}
    assert (d.rating, d.rationale, d.verdict) == (2, "see notes", "accept")


def test_cancelled_annotation_is_a_skip():
    assert decide([], was_cancelled=True).verdict == "skip"


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([r("correction", "labels", {"labels": ["X"]})], "unknown result type 'labels'"),
        ([r("bbox", "rectanglelabels", {"x": 1})], "no such control"),
        ([{"type": "textarea", "value": {"text": ["x"]}}], "from_name is missing"),
        ([{"from_name": "rating", "value": {"rating": 3}}], "type is missing"),
        ([{"from_name": "rating", "type": "rating"}], "value is missing"),
        ([r("rating", "rating", {"stars": 3})], "needs value.rating"),
        ([r("correction", "textarea", {"text": "ok", "x": 1} | {"text": 5})], "needs value.text"),
        ([r("label_tone", "choices", {"choices": ["neutral", "rude"]})], "exactly one option"),
        ([r("label_tone", "choices", {})], "needs value.choices"),
        ([r("preference", "pairwise", {"selected": "middle"})], "'left' or 'right'"),
        ([r("preference", "pairwise", {"selected": "right"})], "has 1 output"),
        (["not an object"], "result 1: must be an object"),
    ],
)
def test_bad_results_are_refused_with_the_control_named(results, message):
    with pytest.raises(MappingError, match=message):
        decide(results)


def test_result_that_is_not_a_list_is_refused():
    with pytest.raises(MappingError, match="must be a list"):
        decide({"from_name": "rating"})


def test_labeling_config_is_valid_xml_with_one_control_per_question_and_escaped_text():
    schema = [*SCHEMA, {"key": "x", "prompt": 'Say "<b>" & more', "type": "text"}]
    xml = labeling_config(review_modes=["correct", "compare", "label"], label_schema=schema)
    root = ET.fromstring(xml)  # noqa: S314 (our own generated config)
    names = {el.get("name"): el.tag for el in root.iter() if el.get("name")}
    assert names["correction"] == "TextArea" and names["preference"] == "Pairwise"
    assert names["label_tone"] == "Choices" and names["label_helpful"] == "Rating"
    assert names["label_notes"] == "TextArea" and names["reject"] == "Choices"
    helpful = next(el for el in root.iter("Rating") if el.get("name") == "label_helpful")
    assert helpful.get("maxRating") == "7" and helpful.get("required") == "true"
    assert any(el.get("value") == 'Say "<b>" & more' for el in root.iter("Header"))
    single = next(el for el in root.iter("Choices") if el.get("name") == "label_tone")
    assert single.get("choice") == "single-radio"


def test_labeling_config_without_the_correct_mode_has_no_correction_box():
    xml = labeling_config(review_modes=["compare"], label_schema=[])
    names = {el.get("name") for el in ET.fromstring(xml).iter()}  # noqa: S314
    assert "correction" not in names and "reject" not in names and "preference" in names


def test_task_data_prefills_single_outputs_and_refuses_unshowable_items():
    data = task_data(
        item_id=5, project_slug="p", external_id="e", prompt="q", candidates=[("o", "m")]
    )
    assert data["output"] == "o" and data["output_a"] == "o" and data["output_b"] == ""
    pair = task_data(
        item_id=5, project_slug="p", external_id="e", prompt="q", candidates=[("a", ""), ("b", "")]
    )
    assert pair["output"] == "" and pair["output_b"] == "b"
    with pytest.raises(MappingError, match="3 outputs"):
        task_data(
            item_id=1, project_slug="p", external_id="e", prompt="q", candidates=[("a", "")] * 3
        )
    with pytest.raises(MappingError, match="no output"):
        task_data(item_id=1, project_slug="p", external_id="e", prompt="q", candidates=[])


def test_result_fingerprint_changes_with_the_result_only():
    a = {"id": 1, "result": [r("rating", "rating", {"rating": 3})], "updated_at": "x"}
    b = {**a, "updated_at": "y", "lead_time": 9}
    c = {**a, "result": [r("rating", "rating", {"rating": 4})]}
    assert result_sha256(a) == result_sha256(b) != result_sha256(c)
