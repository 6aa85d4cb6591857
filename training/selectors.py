"""Reads for dataset versions: what a set of filters selects, the decision stream a build
reads, versions and their files, samples, comparisons and the zip download.

The selection is plain SQL over ``feedback_itemoutcome`` (one row per decided item): the
same WHERE clause serves the live count in the build form, the build's stream and the
benchmark's COPY baseline, so what the form counts is what the build reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from curation.models import Candidate, GuidelineVersion, Item, Project
from feedback.models import GoldAnswer, ItemOutcome, Review
from redline.lib.zipstream import zip_stream
from training.models import (
    Adapter,
    BaseModel,
    DatasetStatus,
    DatasetVersion,
    GenerationJob,
    GenerationOutput,
)

OUTCOME = ItemOutcome._meta.db_table
ITEM = Item._meta.db_table
CANDIDATE = Candidate._meta.db_table
REVIEW = Review._meta.db_table
GUIDELINE = GuidelineVersion._meta.db_table
GOLD = GoldAnswer._meta.db_table

ROW_HASH_BYTES = 16  # blake2b digest of one JSON line, for dedup and comparisons


# ---- The selection ----------------------------------------------------------------------------


def _day_start(value: str) -> datetime:
    return datetime.combine(
        date.fromisoformat(value), time.min, tzinfo=ZoneInfo(settings.TIME_ZONE)
    )


def selection_where(*, project: Project, filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """The WHERE clause (over ``o``, the outcome table) that ``filters`` (normalised by
    ``training.services.datasets.params_clean``) select, with its parameters.

    outcomes and sources: the outcome's values; min_agreement: ``o.agreement`` at least
    that (an outcome without agreement fails it); date_from / date_to: the day the outcome
    was decided, both inclusive, in the site's time zone; models: an output of the item
    came from one of them; labels: for each ``{key: answer}``, some counted review gave
    that answer (a choice, one of a multiple choice's answers, or a rating); gold:
    ``include`` (all), ``exclude`` or ``only`` items with a gold answer.
    """
    clauses = ["o.project_id = %s", "o.outcome = ANY(%s)"]
    params: list[Any] = [project.pk, list(filters["outcomes"])]
    if filters.get("sources"):
        clauses.append("o.source = ANY(%s)")
        params.append(list(filters["sources"]))
    if filters.get("min_agreement") is not None:
        clauses.append("o.agreement >= %s")
        params.append(filters["min_agreement"])
    if filters.get("date_from"):
        clauses.append("o.decided_at >= %s")
        params.append(_day_start(filters["date_from"]))
    if filters.get("date_to"):
        clauses.append("o.decided_at < %s")
        params.append(_day_start(filters["date_to"]) + timedelta(days=1))
    if filters.get("models"):
        clauses.append(
            f"EXISTS (SELECT 1 FROM {CANDIDATE} mc"  # noqa: S608 (table names only)
            " WHERE mc.item_id = o.item_id AND mc.model = ANY(%s))"
        )
        params.append(list(filters["models"]))
    for key, answer in sorted((filters.get("labels") or {}).items()):
        clauses.append(
            f"EXISTS (SELECT 1 FROM {REVIEW} lr WHERE lr.item_id = o.item_id"  # noqa: S608
            " AND lr.verdict <> 'skip'"
            " AND (lr.labels @> CAST(%s AS jsonb) OR lr.labels @> CAST(%s AS jsonb)))"
        )
        params += [json.dumps({key: answer}), json.dumps({key: [answer]})]
    gold = filters.get("gold", "include")
    if gold in ("exclude", "only"):
        negate = "NOT " if gold == "exclude" else ""
        clauses.append(f"{negate}EXISTS (SELECT 1 FROM {GOLD} g WHERE g.item_id = o.item_id)")  # noqa: S608
    return " AND ".join(clauses), params


@dataclass(frozen=True)
class SelectionSummary:
    """What a set of filters selects, by kind of decision."""

    total: int = 0
    accepted: int = 0  # accepted as they were
    corrected: int = 0  # accepted with a final text other than the output
    compared: int = 0  # accepted with a preferred output
    ties: int = 0
    rejected: int = 0
    conversational: int = 0  # items with chat messages

    @property
    def empty(self) -> bool:
        return self.total == 0


def selection_summary(*, project: Project, filters: dict[str, Any]) -> SelectionSummary:
    """Counts for the build form's live count and the empty-selection check (one query)."""
    if connection.vendor != "postgresql":  # the SQLite demo: the same counts through the ORM
        from training.services.sources import portable_selection_summary

        return portable_selection_summary(project=project, filters=filters)
    where, params = selection_where(project=project, filters=filters)
    sql = f"""
        SELECT count(*),
            count(*) FILTER (WHERE o.outcome = 'accepted' AND NOT o.tie
                AND o.preferred_candidate_id IS NULL
                AND (o.final_text = '' OR o.final_text = fc.output)),
            count(*) FILTER (WHERE o.outcome = 'accepted' AND NOT o.tie
                AND o.preferred_candidate_id IS NULL
                AND o.final_text <> '' AND o.final_text IS DISTINCT FROM fc.output),
            count(*) FILTER (WHERE o.outcome = 'accepted' AND o.preferred_candidate_id IS NOT NULL),
            count(*) FILTER (WHERE o.outcome = 'accepted' AND o.tie),
            count(*) FILTER (WHERE o.outcome = 'rejected'),
            count(*) FILTER (WHERE jsonb_typeof(i.messages) = 'array'
                AND jsonb_array_length(i.messages) > 0)
        FROM {OUTCOME} o
        JOIN {ITEM} i ON i.id = o.item_id
        LEFT JOIN {CANDIDATE} fc ON fc.id = o.final_candidate_id
        WHERE {where}
    """  # noqa: S608 (table names and a clause built from constants; values are parameters)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return SelectionSummary(*row)


def decisions_state(*, project: Project) -> list[Any]:
    """A cheap token of the project's decisions: it changes whenever an outcome is decided,
    re-decided or withdrawn, a review is submitted or amended, or a gold answer is set or
    cleared. Part of a build request's fingerprint ("over the same decisions")."""
    sql = f"""
        SELECT (SELECT count(*) FROM {OUTCOME} WHERE project_id = %s),
               (SELECT max(decided_at) FROM {OUTCOME} WHERE project_id = %s),
               (SELECT count(*) FROM {REVIEW} WHERE project_id = %s),
               (SELECT max(updated_at) FROM {REVIEW} WHERE project_id = %s),
               (SELECT count(*) FROM {GOLD} WHERE project_id = %s),
               (SELECT max(updated_at) FROM {GOLD} WHERE project_id = %s)
    """  # noqa: S608 (table names only)
    with connection.cursor() as cursor:
        cursor.execute(sql, [project.pk] * 6)
        row = cursor.fetchone()
    return [v.isoformat() if isinstance(v, datetime) else v for v in row]


# The columns the build reads per decided item, in ``Decision`` order (see services.mapping).
DECISION_COLUMNS = """
    i.id, i.external_id, i.prompt, i.messages,
    o.outcome, o.source, o.final_candidate_id, o.final_text, o.preferred_candidate_id,
    o.tie, o.agreement,
    CASE WHEN o.source = 'adjudicated' THEN o.decided_by_id END,
    c.ids, c.outputs,
    r.ids, r.experts, r.guidelines, r.rejected, r.unnamed_reject
"""


# Their types, for parsing the COPY stream.
DECISION_TYPES = [
    "int8", "text", "text", "jsonb", "text", "text", "int8", "text", "int8",
    "bool", "float8", "int4",
    "int8[]", "text[]",
    "int8[]", "int4[]", "int4[]", "int8[]", "bool",
]  # fmt: skip


# The build's own columns: the same, except that PostgreSQL writes the lineage's JSON for
# the item's id, external id, adjudicator, reviews, experts and guideline versions
# (``mapping.lineage_item_json`` gives the same bytes from the arrays: a test holds them
# to that) instead of handing over three arrays for Python to parse and encode.
DECISION_COLUMNS_SHAPED = """
    i.id, i.external_id, i.prompt, i.messages,
    o.outcome, o.source, o.final_candidate_id, o.final_text, o.preferred_candidate_id,
    o.tie, o.agreement,
    CASE WHEN o.source = 'adjudicated' THEN o.decided_by_id END,
    c.ids, c.outputs,
    r.rejected, r.unnamed_reject,
    '"item":' || to_json(i.external_id)::text || ',"item_id":' || i.id::text,
    '"adjudicated_by":'
        || coalesce((CASE WHEN o.source = 'adjudicated' THEN o.decided_by_id END)::text, 'null')
        || ',"reviews":' || array_to_json(r.ids)::text
        || ',"experts":' || array_to_json(r.experts)::text
        || ',"guideline_versions":' || array_to_json(r.guidelines)::text
"""  # in ``mapping.Decision`` order: a row is a Decision as it comes
DECISION_TYPES_SHAPED = [
    "int8", "text", "text", "jsonb", "text", "text", "int8", "text", "int8",
    "bool", "float8", "int4",
    "int8[]", "text[]",
    "int8[]", "bool", "text", "text",
]  # fmt: skip


def decision_stream_sql(
    *,
    project: Project,
    filters: dict[str, Any],
    item_range: tuple[int | None, int | None] = (),
    shaped: bool = False,
) -> tuple[str, list[Any]]:
    """The build's query: one row per selected item, in item id order, with its outcome
    (the adjudicator only on adjudicated outcomes), its outputs (by position) and its
    counted reviews (by id): review ids, their experts, the guideline version each expert
    saw, and the candidates named by rejections. Arrays are never NULL. ``item_range``
    ``(low, high)``: only items with ``low <= id < high`` (None: no bound), for a build
    split between processes. ``shaped``: ``DECISION_COLUMNS_SHAPED`` (the build's)."""
    where, params = selection_where(project=project, filters=filters)
    low, high = item_range or (None, None)
    if low is not None:
        where += " AND o.item_id >= %s"
        params.append(low)
    if high is not None:
        where += " AND o.item_id < %s"
        params.append(high)
    sql = f"""
        SELECT {DECISION_COLUMNS_SHAPED if shaped else DECISION_COLUMNS}
        FROM {OUTCOME} o
        JOIN {ITEM} i ON i.id = o.item_id
        CROSS JOIN LATERAL (
            SELECT coalesce(array_agg(cc.id ORDER BY cc.position), '{{}}') AS ids,
                   coalesce(array_agg(cc.output ORDER BY cc.position), '{{}}') AS outputs
            FROM {CANDIDATE} cc WHERE cc.item_id = o.item_id
        ) c
        CROSS JOIN LATERAL (
            SELECT coalesce(array_agg(rr.id ORDER BY rr.id), '{{}}') AS ids,
                   coalesce(array_agg(rr.expert_id ORDER BY rr.id), '{{}}') AS experts,
                   coalesce(array_agg(gv.version ORDER BY rr.id), '{{}}') AS guidelines,
                   coalesce(array_agg(rr.candidate_id ORDER BY rr.id)
                       FILTER (WHERE rr.verdict = 'reject' AND rr.candidate_id IS NOT NULL),
                       '{{}}') AS rejected,
                   coalesce(bool_or(rr.verdict = 'reject' AND rr.candidate_id IS NULL), false)
                       AS unnamed_reject
            FROM {REVIEW} rr
            LEFT JOIN {GUIDELINE} gv ON gv.id = rr.guideline_version_id
            WHERE rr.item_id = o.item_id AND rr.verdict <> 'skip'
        ) r
        WHERE {where}
        ORDER BY o.item_id
    """  # noqa: S608 (table names and a clause built from constants; values are parameters)
    return sql, params


def project_models(*, project: Project, limit: int = 200) -> list[str]:
    """The model labels of the project's outputs (for the build form's model filter)."""
    return list(
        Candidate.objects.filter(item__project=project)
        .exclude(model="")
        .order_by("model")
        .values_list("model", flat=True)
        .distinct()[:limit]
    )


# ---- Versions ---------------------------------------------------------------------------------


def dataset_version_list(*, project: Project) -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.filter(project=project).select_related("created_by")


def version_dir(version: DatasetVersion) -> Path:
    return Path(settings.STORAGE_DIR) / version.storage_path


def version_file_names(version: DatasetVersion) -> list[str]:
    """Every file a download may name: data files, their lineage files, the manifest."""
    if version.status != DatasetStatus.SUCCEEDED:
        return []
    names = ["manifest.json"]
    for entry in version.files:
        names += [entry["name"], entry["lineage"]["name"]]
    return names


def version_file_path(version: DatasetVersion, name: str) -> Path | None:
    """The file ``name`` of a built version, or None. Only names the manifest lists are
    served: a request never reaches the filesystem with a path of its own."""
    if name not in version_file_names(version):
        return None
    path = version_dir(version) / name
    return path if path.is_file() else None


def _display_field(name: str, value: Any) -> dict[str, Any]:
    """One column of a sample row, shaped for the template: text, a chat, or a label."""
    if isinstance(value, bool):
        return {"name": name, "label": value}
    if isinstance(value, list):
        return {"name": name, "messages": value}
    return {"name": name, "text": str(value)}


def version_sample(version: DatasetVersion, *, per_file: int = 3) -> list[dict[str, Any]]:
    """The first rows of each data file, for the version page: ``[{file, rows: [[field,
    ...], ...]}]``. The texts are untrusted and are rendered escaped."""
    samples = []
    for entry in version.files:
        path = version_file_path(version, entry["name"])
        rows = []
        if path is not None:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    rows.append([_display_field(k, v) for k, v in row.items()])
                    if len(rows) >= per_file:
                        break
        samples.append({"file": entry, "rows": rows})
    return samples


def _hashes(version: DatasetVersion, kind: str) -> Iterator[bytes]:
    """A built version's row hashes of ``kind``, sorted and distinct, read in chunks."""
    path = version_dir(version) / "rowhashes" / f"{kind}.bin"
    if version.status != DatasetStatus.SUCCEEDED or not path.is_file():
        return
    with open(path, "rb") as f:
        while chunk := f.read(ROW_HASH_BYTES * 4096):
            for start in range(0, len(chunk), ROW_HASH_BYTES):
                yield chunk[start : start + ROW_HASH_BYTES]


@dataclass(frozen=True)
class KindComparison:
    kind: str
    added: int  # rows in this version, not in the other
    removed: int  # rows in the other version, not in this one
    common: int


def version_compare(version: DatasetVersion, other: DatasetVersion) -> list[KindComparison]:
    """Rows added and removed per kind, going from ``other`` to ``version``: a merge of the
    two versions' sorted row-hash files (a row is its exact JSON line; train and eval
    together). Constant memory, linear time."""
    kinds = [k for k in ("sft", "preference", "kto") if k in version.kinds or k in other.kinds]
    result = []
    for kind in kinds:
        added = removed = common = 0
        mine, theirs = _hashes(version, kind), _hashes(other, kind)
        a, b = next(mine, None), next(theirs, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a < b):
                added += 1
                a = next(mine, None)
            elif a is None or b < a:
                removed += 1
                b = next(theirs, None)
            else:
                common += 1
                a, b = next(mine, None), next(theirs, None)
        result.append(KindComparison(kind, added, removed, common))
    return result


def version_archive(version: DatasetVersion, *, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """One zip of every file of a built version (data, lineage, manifest), produced as it is
    sent: nothing is held in memory beyond a chunk, nothing is written to disk."""
    files = (
        (f"dataset-{version.pk}/{name}", path)
        for name in version_file_names(version)
        if (path := version_file_path(version, name)) is not None
    )
    return zip_stream(files, chunk_size=chunk_size)


# ---- Model references in requests -------------------------------------------------------------


def base_model_by_reference(value: Any) -> BaseModel | None:
    """A base model named in a request: by id (``"12"``) or by name. ``isdecimal``, not
    ``isdigit``: ``"²"`` is a digit that ``int()`` refuses."""
    value = str(value).strip()
    lookup = {"pk": int(value)} if value.isdecimal() else {"name": value}
    return BaseModel.objects.filter(**lookup).first()


def project_adapter(project: Project, adapter_id: Any) -> Adapter | None:
    """Adapter ``adapter_id`` of ``project`` (trained on one of its dataset versions); another
    project's adapter reads as missing, like one that does not exist."""
    try:
        pk = int(adapter_id)
    except (TypeError, ValueError):
        return None
    return (
        Adapter.objects.select_related("run__dataset_version__project", "run__base_model")
        .filter(pk=pk, run__dataset_version__project=project)
        .first()
    )


# ---- Generation jobs --------------------------------------------------------------------------


def generation_job_list(*, project: Project, purposes=None) -> QuerySet[GenerationJob]:
    jobs = GenerationJob.objects.filter(project=project).select_related("created_by")
    if purposes:
        jobs = jobs.filter(purpose__in=purposes)
    return jobs.prefetch_related("targets")


def generation_job_outputs(*, job: GenerationJob) -> QuerySet[GenerationOutput]:
    return (
        GenerationOutput.objects.filter(job=job)
        .select_related("target")
        .order_by("index", "target__position")
    )
