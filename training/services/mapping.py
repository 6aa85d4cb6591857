"""From one item's final decision to training rows: the table in docs/datasets.md.

Pure functions, no database: ``decision_texts`` says which texts an outcome makes good and
bad, ``RowEncoder`` turns them into JSON lines in trl's column names, ``split_of`` puts a
prompt on the train or eval side. The build (``training.services.datasets``) streams
decisions through these.

The outcome is the truth. Per item:

* **good texts**: what the outcome keeps: its final text (the accepted output, the agreed
  correction or the adjudicator's text); on a tie, every tied output (the corrected one as
  corrected);
* **bad texts**: the outputs that lost a comparison, the original of an output whose
  correction is more than a trivial edit, and the outputs of a rejected item.

SFT rows are the good texts; KTO rows are the good texts (``label`` true) and the bad ones
(false); preference rows pair each good text with the bad texts it was judged better than:
a comparison's winner against each loser, a correction against its own original. Tied
outputs are never paired with each other.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from typing import Any, NamedTuple

KINDS = ("sft", "preference", "kto")
SPLITS = ("train", "eval")

# json's own C string encoder: the same bytes as json.dumps(..., ensure_ascii=False).
_enc = json.encoder.encode_basestring
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Decision(NamedTuple):
    """One item with its outcome, candidates and the counted reviews behind it (the fields
    in the order ``selectors.DECISION_COLUMNS_SHAPED`` selects them)."""

    item_id: int
    external_id: str
    prompt: str
    messages: list[dict] | None
    outcome: str  # accepted | rejected
    source: str  # unanimous | majority | adjudicated
    final_candidate_id: int | None
    final_text: str
    preferred_candidate_id: int | None
    tie: bool
    agreement: float | None
    decided_by_id: int | None  # the adjudicator
    candidate_ids: Sequence[int]
    candidate_outputs: Sequence[str]
    rejected_candidate_ids: Sequence[int] = ()  # named by counted reject reviews
    unnamed_reject: bool = False  # a counted reject review named no candidate
    # The lineage's JSON written by PostgreSQL (``selectors.DECISION_COLUMNS_SHAPED``):
    # '"item":…,"item_id":…' and '"adjudicated_by":…,…,"guideline_versions":[…]', the
    # arrays below then left empty; None: ``lineage_item_json`` writes it from the fields.
    lineage_head: str | None = None
    lineage_rest: str | None = None
    review_ids: Sequence[int] = ()
    expert_ids: Sequence[int] = ()
    guideline_versions: Sequence[int | None] = ()


class Text(NamedTuple):
    """A completion and where it came from: ``candidate:<id>`` (that output verbatim) or
    ``final`` (the outcome's final text: a correction or the adjudicator's text)."""

    text: str
    origin: str


class Texts(NamedTuple):
    """What an outcome says about an item's texts (see the module docstring)."""

    decision: str  # accept | correct | compare | tie | reject
    good: list[Text]
    bad: list[Text]
    pairs: list[tuple[Text, Text]]  # (chosen, rejected)


def _squeeze(text: str) -> str:
    return "".join(text.split())


def edit_size(original: str, edited: str) -> int:
    """How many characters an edit spans once whitespace is ignored: both texts without
    whitespace, common prefix and suffix removed, the longer remainder. 0 for an edit that
    only touched whitespace. An upper bound of the edit distance that is exact for one
    contiguous change; the common ends are found by bisection on slices (C comparisons)."""
    a, b = _squeeze(original), _squeeze(edited)
    if a == b:
        return 0
    low, high = 0, min(len(a), len(b))  # the longest common prefix is in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    prefix = low
    low, high = 0, min(len(a), len(b)) - prefix  # same for the suffix of what is left
    while low < high:
        mid = (low + high + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            low = mid
        else:
            high = mid - 1
    return max(len(a), len(b)) - prefix - low


def substantive(original: str, edited: str, min_edit_chars: int) -> bool:
    """Whether an edit is enough to make the original a bad text. ``min_edit_chars`` 0: any
    change at all; N ≥ 1: the edit spans at least N non-whitespace characters."""
    if original == edited:
        return False
    if min_edit_chars <= 0:
        return True
    if min_edit_chars == 1:  # the default, "more than whitespace": no need to measure
        return _squeeze(original) != _squeeze(edited)
    return edit_size(original, edited) >= min_edit_chars


_text = tuple.__new__  # Text(t, o) without NamedTuple's Python-level __new__


def _cand(ids: Sequence[int], outputs: Sequence[str], index: int) -> Text:
    return _text(Text, (outputs[index], "candidate:" + str(ids[index])))


def decision_texts(d: Decision, *, min_edit_chars: int = 1) -> Texts:
    """Good texts, bad texts and preference pairs for one decided item. Empty texts are
    left out, and so is a bad text identical to a good one (and its pair)."""
    ids, outputs = d.candidate_ids, d.candidate_outputs

    if d.outcome == "rejected":
        named = set(d.rejected_candidate_ids).intersection(ids)
        targets = [i for i, cid in enumerate(ids) if d.unnamed_reject or not named or cid in named]
        return Texts(
            "reject", [], [_cand(ids, outputs, i) for i in targets if outputs[i].strip()], []
        )

    final = d.final_text
    good: list[Text] = []
    bad: list[Text] = []
    pairs: list[tuple[Text, Text]] = []

    if d.tie:  # every tied output is good (the corrected one as corrected); no pair between them
        for index, cid in enumerate(ids):
            if cid == d.final_candidate_id and final.strip() and final != outputs[index]:
                edit = _text(Text, (final, "final"))
                good.append(edit)
                # A correction more than trivial makes its original bad, and the pair.
                if substantive(outputs[index], final, min_edit_chars) and outputs[index].strip():
                    bad.append(_cand(ids, outputs, index))
                    pairs.append((edit, bad[-1]))
            elif outputs[index].strip():
                good.append(_cand(ids, outputs, index))
        return Texts("tie", good, [t for t in bad if t.text not in {g.text for g in good}], pairs)

    # The output the outcome keeps (and that a correction edited), by position.
    kept_id = d.final_candidate_id or d.preferred_candidate_id
    if kept_id is None and len(ids) == 1:
        kept_id = ids[0]
    kept = ids.index(kept_id) if kept_id in ids else None
    if not final and kept is not None:
        final = outputs[kept]
    if not final.strip():
        return Texts("accept", [], [], [])
    if kept is not None and final == outputs[kept]:
        chosen, decision = _cand(ids, outputs, kept), "accept"
    else:
        chosen, decision = _text(Text, (final, "final")), "correct"
        # A correction more than trivial makes its original bad, and the pair.
        if (
            kept is not None
            and substantive(outputs[kept], final, min_edit_chars)
            and outputs[kept].strip()
        ):
            bad.append(_cand(ids, outputs, kept))
            pairs.append((chosen, bad[-1]))
    good.append(chosen)
    if d.preferred_candidate_id is not None:
        decision = "compare"
        for index, cid in enumerate(ids):
            if index != kept and cid != d.preferred_candidate_id:
                loser = _cand(ids, outputs, index)
                if loser.text.strip() and loser.text != final:
                    bad.append(loser)
                    pairs.append((chosen, loser))
    return Texts(decision, good, bad, pairs)


# ---- Prompts and the split -------------------------------------------------------------------


def chat_messages(messages: Any) -> list[dict] | None:
    """An item's messages as ``[{role, content}]`` (other keys dropped), or None."""
    if not messages or not isinstance(messages, list):
        return None
    return [
        {"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in messages
    ]


def normalised_prompt(prompt: str, messages: list[dict] | None) -> str:
    """The prompt as the split sees it: Unicode NFC, case folded, whitespace collapsed; a chat
    as its turns (role and content) in order. Two items whose prompts differ only in case or
    spacing land on the same side."""

    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).split()).casefold()

    if messages:
        return "\x1e".join(f"{m['role']}\x1f{norm(m['content'])}" for m in messages)
    return norm(prompt)


def split_of(normalised: str, *, seed: int, eval_fraction: float) -> str:
    """``train`` or ``eval``: the first 8 bytes of sha256(seed, normalised prompt) as a number
    in [0, 1), compared with ``eval_fraction``. Stable across runs, machines and Python
    versions, and the same for every row of a prompt."""
    if eval_fraction <= 0:
        return "train"
    digest = hashlib.sha256(f"{seed}\x00{normalised}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


# ---- Encoding ------------------------------------------------------------------------------


def _messages_json(messages: list[dict]) -> str:
    return (
        "["
        + ",".join(
            '{"role":' + _enc(m["role"]) + ',"content":' + _enc(m["content"]) + "}"
            for m in messages
        )
        + "]"
    )


class RowEncoder:
    """JSON lines in trl's column names, byte for byte what ``json.dumps(row,
    ensure_ascii=False, separators=(",", ":"))`` gives (a test holds it to that), built by
    concatenation so each text is encoded once per item.

    * standard: ``{"prompt", "completion"}``, ``{"prompt", "chosen", "rejected"}``,
      ``{"prompt", "completion", "label"}`` as strings;
    * conversational: ``{"messages"}`` (the chat and the assistant's answer),
      ``{"prompt", "chosen", "rejected"}`` and ``{"prompt", "completion", "label"}`` with
      the prompt as the chat's messages and each completion as one assistant message.

    In a conversational version a plain-text prompt becomes one user message, and the
    system prompt (when given) opens every chat that does not start with a system message.
    """

    def __init__(self, *, conversational: bool, system_prompt: str = ""):
        self.conversational = conversational
        self.system_prompt = system_prompt

    def prompt_messages(self, prompt: str, messages: list[dict] | None) -> list[dict]:
        turns = list(messages) if messages else [{"role": "user", "content": prompt}]
        if self.system_prompt and (not turns or turns[0]["role"] != "system"):
            turns.insert(0, {"role": "system", "content": self.system_prompt})
        return turns

    def item(self, prompt: str, messages: list[dict] | None) -> _ItemEncoder:
        if self.conversational:
            chat = _messages_json(self.prompt_messages(prompt, messages))
            return _ItemEncoder(chat, conversational=True)
        return _ItemEncoder(_enc(prompt), conversational=False)


class _ItemEncoder:
    """Rows of one item: its prompt is encoded once; each completion once."""

    __slots__ = ("_cache", "conversational", "prompt")

    def __init__(self, prompt_json: str, *, conversational: bool):
        self.prompt = prompt_json
        self.conversational = conversational
        self._cache: dict[str, str] = {}

    def _completion(self, text: str) -> str:
        encoded = self._cache.get(text)
        if encoded is None:
            encoded = _enc(text)
            if self.conversational:
                encoded = '[{"role":"assistant","content":' + encoded + "}]"
            self._cache[text] = encoded
        return encoded

    def sft(self, text: str) -> str:
        if self.conversational:
            # The chat with the answer appended: '[...]' + ',{assistant}]'.
            answer = self._completion(text)[1:]
            return '{"messages":' + self.prompt[:-1] + "," + answer + "}"
        return '{"prompt":' + self.prompt + ',"completion":' + self._completion(text) + "}"

    def preference(self, chosen: str, rejected: str) -> str:
        return (
            '{"prompt":'
            + self.prompt
            + ',"chosen":'
            + self._completion(chosen)
            + ',"rejected":'
            + self._completion(rejected)
            + "}"
        )

    def kto(self, text: str, label: bool) -> str:
        return (
            '{"prompt":'
            + self.prompt
            + ',"completion":'
            + self._completion(text)
            + (',"label":true}' if label else ',"label":false}')
        )


def _texts_json(*origins: str) -> str:
    """A lineage line's ``"texts":[…]`` member (origins are ``final`` or ``candidate:<id>``:
    nothing to escape)."""
    return '"texts":["' + '","'.join(origins) + '"]'


def item_rows(
    texts: Texts, encoder: _ItemEncoder, kinds: frozenset[str]
) -> list[tuple[str, str, str]]:
    """``(kind, JSON line without newline, "texts":[origins])`` for every row of one item, in
    a fixed order: SFT, then preference, then KTO (good texts, then bad)."""
    rows: list[tuple[str, str, str]] = []
    add = rows.append
    if "sft" in kinds:
        sft = encoder.sft
        for text, origin in texts.good:
            add(("sft", sft(text), '"texts":["' + origin + '"]'))
    if "preference" in kinds:
        preference = encoder.preference
        for chosen, rejected in texts.pairs:
            add(
                (
                    "preference",
                    preference(chosen.text, rejected.text),
                    '"texts":["' + chosen.origin + '","' + rejected.origin + '"]',
                )
            )
    if "kto" in kinds:
        kto = encoder.kto
        for text, origin in texts.good:
            add(("kto", kto(text, True), '"texts":["' + origin + '"]'))
        for text, origin in texts.bad:
            add(("kto", kto(text, False), '"texts":["' + origin + '"]'))
    return rows


def _json_ints(values: Sequence[int | None]) -> str:
    if None in values:
        return "[" + ",".join("null" if v is None else str(int(v)) for v in values) + "]"
    return "[" + ",".join(map(str, values)) + "]"


def lineage_item_json(d: Decision, decision: str) -> str:
    """The part of a lineage line shared by every row of an item (without braces), in this
    order: item (external id), item_id, decision, outcome, outcome_source, agreement,
    adjudicated_by, reviews, experts, guideline_versions. Built by hand, byte for byte what
    ``json.dumps`` gives (a test holds it to that): it runs once per item. The parts
    PostgreSQL wrote (``Decision.lineage_head`` and ``lineage_rest``) are taken as they
    are."""
    agreement = "null" if d.agreement is None else float.__repr__(float(d.agreement))
    middle = (
        f'"decision":{_enc(decision)},"outcome":{_enc(d.outcome)},'
        f'"outcome_source":{_enc(d.source)},"agreement":{agreement}'
    )
    if d.lineage_head is not None:
        return d.lineage_head + "," + middle + "," + d.lineage_rest
    adjudicator = "null" if d.decided_by_id is None else str(int(d.decided_by_id))
    return (
        f'"item":{_enc(d.external_id)},"item_id":{int(d.item_id)},{middle},'
        f'"adjudicated_by":{adjudicator},'
        f'"reviews":{_json_ints(d.review_ids)},"experts":{_json_ints(d.expert_ids)},'
        f'"guideline_versions":{_json_ints(d.guideline_versions)}'
    )


def lineage_tail(texts_json: str, item_json: str) -> str:
    """A lineage line after its ``{"row":N,`` (the writer numbers rows as it writes them):
    where the row's texts came from (``_texts_json``), then the item's record
    (``lineage_item_json``)."""
    return texts_json + "," + item_json + "}"


def lineage_line(row: int, origins: list[str], item_part: str) -> str:
    """One lineage line: ``row`` (0-based line number in the data file) first, then where
    the row's texts came from (``candidate:<id>`` or ``final``), then the item's record."""
    return '{"row":' + str(row) + "," + lineage_tail(_texts_json(*origins), item_part)


class SummaryTally:
    """The counts of ``selectors.selection_summary`` taken from the decisions as they stream
    by (the same definitions, NULLs included), so the build needs no counting query."""

    __slots__ = ("accepted", "compared", "conversational", "corrected", "rejected", "ties", "total")

    def __init__(self) -> None:
        self.total = self.accepted = self.corrected = self.compared = 0
        self.ties = self.rejected = self.conversational = 0

    def add(self, d: Decision) -> None:
        self.total += 1
        if d.messages:
            self.conversational += 1
        if d.outcome == "rejected":
            self.rejected += 1
        elif d.outcome == "accepted":
            if d.preferred_candidate_id is not None:
                self.compared += 1
            if d.tie:
                self.ties += 1
            elif d.preferred_candidate_id is None:
                final = d.final_text
                kept = d.final_candidate_id
                # o.final_text = fc.output, where fc is NULL without a final candidate
                output = (
                    d.candidate_outputs[d.candidate_ids.index(kept)]
                    if kept is not None and kept in d.candidate_ids
                    else None
                )
                if final == "" or final == output:
                    self.accepted += 1
                else:
                    self.corrected += 1

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def merge(self, counts: dict[str, int]) -> None:
        """Add another tally's ``counts()`` (a build split between processes)."""
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + counts[name])
