# ruff: noqa: F811 (fixtures imported from generation_fixtures are used as arguments)
"""Generation jobs on the tiny model, executed as the worker executes them
(``generation_job_execute``): batched equals unbatched greedy output, each base model is
loaded once per job with its adapters attached, candidates land tagged and idempotently,
cancel, the stale sweep, failures, validation with messages naming the field."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from curation.models import Candidate, Item
from tests.factories import ProjectFactory, UserFactory, item_add, membership_add
from tests.training.generation_fixtures import (  # noqa: F401 (fixtures)
    QA,
    adapter,
    data_dir,
    eval_version,
    sft_run,
    tiny,
    tiny_dir,
)
from training.ml.generate import Generator
from training.models import (
    GenerationJob,
    GenerationOutput,
    GenerationPurpose,
    GenerationSource,
    JobStatus,
)
from training.services import generation as services
from training.services.generation import (
    eval_split_prompts,
    generation_job_cancel,
    generation_job_create,
    generation_job_execute,
    generation_jobs_fail_stale,
)
from training.services.runs import base_model_register

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

GREEDY = {"temperature": 0, "max_new_tokens": 12, "batch_size": 4}
PROMPTS = [
    QA[0][0],
    QA[1][0],
    "Hi",
    QA[2][0] + " It was a gift and the box is still sealed, so can I?",
    [{"role": "user", "content": QA[3][0]}],
    QA[3][0],
]


@pytest.fixture
def loads(monkeypatch):
    """Counts base-model loads and adapter attachments during a job."""
    counts = {"base": [], "adapter": []}
    real_load = services.load_generator
    real_attach = Generator.load_adapter

    def counting_load(base_model):
        counts["base"].append(base_model.name)
        return real_load(base_model)

    def counting_attach(self, path, name=None):
        counts["adapter"].append(name)
        return real_attach(self, path, name=name)

    monkeypatch.setattr(services, "load_generator", counting_load)
    monkeypatch.setattr(Generator, "load_adapter", counting_attach)
    return counts


def run_job(**kwargs) -> GenerationJob:
    job = generation_job_create(**kwargs)
    assert generation_job_execute(job.pk) == JobStatus.SUCCEEDED, job.log
    job.refresh_from_db()
    return job


def answers(job, target) -> list[str]:
    return list(
        GenerationOutput.objects.filter(job=job, target=target)
        .order_by("index")
        .values_list("output", flat=True)
    )


def test_batched_job_answers_equal_unbatched_greedy_generation_and_the_base_loads_once(
    project, tiny, adapter, loads, settings
):
    job = run_job(
        project=project,
        targets=[(tiny, None), (tiny, adapter)],
        source=GenerationSource.PROMPTS,
        purpose=GenerationPurpose.TRY_IT,
        prompts=PROMPTS,
        decoding=GREEDY,
    )
    assert job.status == JobStatus.SUCCEEDED and job.done == job.total == 12
    assert loads["base"] == ["tiny"] and loads["adapter"] == [f"adapter-{adapter.pk}"]
    assert job.new_tokens > 0 and job.tokens_per_s > 0
    base_target, adapter_target = job.targets.order_by("position")
    assert (base_target.tag, adapter_target.tag) == ("tiny", f"tiny+adapter-{adapter.pk}")

    # The reference: one prompt at a time, no padding, on a fresh model.
    reference = Generator(tiny.resolved_reference())
    name = reference.load_adapter(Path(settings.STORAGE_DIR) / adapter.path, name="ref")
    greedy = {"temperature": 0, "max_new_tokens": 12}
    for target, adapter_name in ((base_target, None), (adapter_target, name)):
        one_by_one = [
            reference.generate([p], adapter=adapter_name, batch_size=1, **greedy)[0]
            for p in PROMPTS
        ]
        assert answers(job, target) == one_by_one
    # the adapter changed the weights, so it answers differently
    assert answers(job, adapter_target) != answers(job, base_target)
    # try_it: outputs only, nothing in the review queue
    assert not Item.objects.filter(source="generation").exists()


def test_each_base_model_is_loaded_once_per_job_with_its_adapters_attached(
    project, tiny, adapter, loads, settings
):
    copy = Path(settings.STORAGE_DIR) / "tiny-copy"
    shutil.copytree(tiny.resolved_reference(), copy)
    other = base_model_register(name="tiny-copy", reference=str(copy))
    job = run_job(
        project=project,
        targets=[(tiny, None), (other, None), (tiny, adapter)],
        source=GenerationSource.PROMPTS,
        purpose=GenerationPurpose.TRY_IT,
        prompts=PROMPTS[:3],
        decoding={**GREEDY, "batch_size": 1},  # three batches: still one load per base
    )
    assert sorted(loads["base"]) == ["tiny", "tiny-copy"]
    assert loads["adapter"] == [f"adapter-{adapter.pk}"]
    assert job.done == 9 and GenerationOutput.objects.filter(job=job).count() == 9
    first, second, _ = job.targets.order_by("position")
    assert answers(job, first) == answers(job, second)  # the same weights, the same answers


def test_open_items_get_one_tagged_candidate_per_target_in_queue_order_and_only_once(
    project, tiny, adapter
):
    low = item_add(project, prompt=QA[0][0], candidates=[("Old answer.", "prod")])
    high = item_add(project, prompt=QA[1][0], priority=5, candidates=[("A", "prod"), ("B", "x")])
    chat = item_add(project, messages=[{"role": "user", "content": QA[2][0]}])
    done = item_add(project, prompt="Closed", status="complete")
    targets = [(tiny, None), (tiny, adapter)]
    tags = ["tiny", f"tiny+adapter-{adapter.pk}"]

    job = run_job(
        project=project, targets=targets, source=GenerationSource.OPEN_ITEMS, decoding=GREEDY
    )
    outputs = list(GenerationOutput.objects.filter(job=job).order_by("index", "target__position"))
    # queue order: priority first, then oldest; the complete item is not a prompt
    assert [o.item_id for o in outputs] == [high.pk, high.pk, low.pk, low.pk, chat.pk, chat.pk]
    assert outputs[4].messages == [{"role": "user", "content": QA[2][0]}]
    assert list(high.candidates.values_list("position", "model")) == [
        (0, "prod"),
        (1, "x"),
        (2, tags[0]),
        (3, tags[1]),
    ]
    assert list(low.candidates.values_list("position", "model")) == [(0, "prod"), (1, tags[0]),
                                                                     (2, tags[1])]  # fmt: skip
    for output in outputs:
        candidate = Candidate.objects.get(pk=output.candidate_id)
        assert (candidate.item_id, candidate.output, candidate.model) == (
            output.item_id,
            output.output,
            output.target.tag,
        )
    assert not done.candidates.exclude(model="base-model").exists()

    # The same models again: every item already has their answers, nothing is added.
    again = run_job(
        project=project, targets=targets, source=GenerationSource.OPEN_ITEMS, decoding=GREEDY
    )
    mine = [low.pk, high.pk, chat.pk, done.pk]
    assert Candidate.objects.filter(item__in=mine).count() == 4 + 6 + 1
    assert not GenerationOutput.objects.filter(job=again, candidate__isnull=False).exists()
    # limit: only the first item in queue order
    job = generation_job_create(
        project=project, targets=[(tiny, None)], source=GenerationSource.OPEN_ITEMS, limit=1
    )
    assert job.total == 1


def test_eval_split_prompts_become_new_items_with_one_candidate_per_target(
    project, tiny, adapter, eval_version, settings
):
    expected = [spec.prompt for spec in eval_split_prompts(eval_version)]
    with open(Path(settings.STORAGE_DIR) / eval_version.storage_path / "sft.eval.jsonl") as fh:
        held_out = [json.loads(line)["prompt"] for line in fh]
    assert expected == list(dict.fromkeys(held_out)) and expected

    job = run_job(
        project=project,
        targets=[(tiny, adapter), (tiny, None)],
        source=GenerationSource.EVAL_SPLIT,
        dataset_version=eval_version,
        decoding={**GREEDY, "temperature": 0.8, "seed": 7},
    )
    assert job.total == 2 * len(expected)
    items = list(Item.objects.filter(source="generation").order_by("external_id"))
    assert [i.external_id for i in items] == sorted(
        f"generation-{job.pk}-{n}" for n in range(len(expected))
    )
    for item in items:
        index = item.metadata["prompt_index"]
        assert item.prompt == expected[index] and item.metadata["generation_job"] == job.pk
        assert list(item.candidates.values_list("position", "model")) == [
            (0, f"tiny+adapter-{adapter.pk}"),
            (1, "tiny"),
        ]
    # sampling with a seed is reproducible: the same job again gives the same answers
    again = run_job(
        project=project,
        targets=[(tiny, adapter), (tiny, None)],
        source=GenerationSource.EVAL_SPLIT,
        dataset_version=eval_version,
        decoding={**GREEDY, "temperature": 0.8, "seed": 7},
    )
    assert [o.output for o in GenerationOutput.objects.filter(job=again)] == [
        o.output for o in GenerationOutput.objects.filter(job=job)
    ]


def test_a_prompt_file_is_checked_whole_and_its_prompts_become_items(project, tiny, tmp_path):
    good = tmp_path / "prompts.jsonl"
    good.write_text(
        json.dumps({"prompt": "Where is my parcel?", "external_id": "p-1"})
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "Hi"}]})
        + "\n"
    )
    job = run_job(
        project=project, targets=[(tiny, None)], source=GenerationSource.FILE, prompts_file=good,
        decoding={**GREEDY, "max_new_tokens": 3},
    )  # fmt: skip
    assert job.total == 2
    items = list(Item.objects.filter(source="generation").order_by("id"))
    assert [i.prompt for i in items] == ["Where is my parcel?", ""]
    assert items[0].metadata["external_id"] == "p-1"
    assert items[1].messages == [{"role": "user", "content": "Hi"}]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "fine"}\n{"prompt": ""}\nnot json\n'
        '{"messages": [{"role": "robot", "content": "x"}]}\n{"prompt": "a", "messages": []}\n'
    )
    with pytest.raises(ValidationError) as exc:
        generation_job_create(
            project=project, targets=[(tiny, None)], source=GenerationSource.FILE, prompts_file=bad
        )
    problems = exc.value.message_dict["prompts_file"]
    assert problems[0] == "line 2, prompt: Must not be empty."
    assert problems[1].startswith("line 3: Not valid JSON")
    assert problems[2].startswith("line 4, messages[0].role: Must be one of")
    assert problems[3] == "line 5, messages: Give either prompt or messages, not both."
    assert GenerationJob.objects.count() == 1
    stored = list((Path(services.settings.STORAGE_DIR) / "generation" / "prompts").iterdir())
    assert len(stored) == 1  # the good file only: a refused file is not kept


@pytest.mark.parametrize(
    "decoding, key",
    [
        ({"max_new_tokens": 0}, "decoding.max_new_tokens"),
        ({"max_new_tokens": 4097}, "decoding.max_new_tokens"),
        ({"max_new_tokens": "12"}, "decoding.max_new_tokens"),
        ({"temperature": -0.1}, "decoding.temperature"),
        ({"top_p": 0}, "decoding.top_p"),
        ({"top_p": 1.5}, "decoding.top_p"),
        ({"seed": 1.5}, "decoding.seed"),
        ({"seed": True}, "decoding.seed"),
        ({"batch_size": 0}, "decoding.batch_size"),
        ({"batch_size": 257}, "decoding.batch_size"),
        ({"beams": 4}, "decoding.beams"),
    ],
)
def test_bad_decoding_settings_are_refused_by_name(project, tiny, decoding, key):
    with pytest.raises(ValidationError) as exc:
        generation_job_create(
            project=project,
            targets=[(tiny, None)],
            source=GenerationSource.PROMPTS,
            prompts=["Hi"],
            decoding=decoding,
        )
    assert list(exc.value.message_dict) == [key]
    assert not GenerationJob.objects.exists()


def test_bad_targets_sources_and_versions_are_refused_with_the_field_named(
    project, tiny, adapter, eval_version, personas, build, decide_item, settings
):
    other = ProjectFactory()
    outside_expert = UserFactory(username="other-expert")
    membership_add(other, outside_expert, "expert")
    for n in range(4):
        decide_item(other, [(outside_expert, "accept", {})], prompt=f"Q{n}?")
    other_version = build(other, personas["admin"], kinds=["sft"], eval_fraction=0.5)
    no_eval = build(project, personas["admin"], kinds=["sft"], eval_fraction=0)
    copy = Path(settings.STORAGE_DIR) / "tiny-copy"
    shutil.copytree(tiny.resolved_reference(), copy)
    second_base = base_model_register(name="tiny-copy", reference=str(copy))
    prompts = {"source": GenerationSource.PROMPTS, "prompts": ["Hi"]}
    cases = [
        ({"project": other, "targets": [(tiny, adapter)], **prompts}, "targets[0].adapter"),
        (
            {"project": project, "targets": [(second_base, adapter)], **prompts},
            "targets[0].adapter",
        ),
        ({"project": project, "targets": [], **prompts}, "targets"),
        ({"project": project, "targets": [(tiny, None), (tiny, None)], **prompts}, "targets[1]"),
        (
            {
                "project": project,
                "targets": [(tiny, None)],
                "source": GenerationSource.EVAL_SPLIT,
                "dataset_version": other_version,
            },
            "dataset_version",
        ),
        (
            {
                "project": project,
                "targets": [(tiny, None)],
                "source": GenerationSource.EVAL_SPLIT,
                "dataset_version": no_eval,
            },
            "dataset_version",
        ),
        (
            {"project": project, "targets": [(tiny, None)], "source": GenerationSource.EVAL_SPLIT},
            "dataset_version",
        ),
        ({"project": project, "targets": [(tiny, None)], "source": "web"}, "source"),
        ({"project": project, "targets": [(tiny, None)], **prompts, "purpose": "x"}, "purpose"),
        ({"project": project, "targets": [(tiny, None)], **prompts, "limit": 0}, "limit"),
        (
            {"project": project, "targets": [(tiny, None)], "source": "prompts", "prompts": []},
            "prompts",
        ),
        (
            {"project": project, "targets": [(tiny, None)], "source": "prompts", "prompts": [3]},
            "prompts",
        ),
        ({"project": project, "targets": [(tiny, None)], "source": "file"}, "prompts_file"),
        ({"project": other, "targets": [(tiny, None)], "source": "open_items"}, "source"),
    ]
    for kwargs, key in cases:
        with pytest.raises(ValidationError) as exc:
            generation_job_create(**kwargs)
        assert key in exc.value.message_dict, (kwargs, exc.value.message_dict)
    assert not GenerationJob.objects.exists()
    with pytest.raises(ValidationError) as exc:
        generation_job_create(project=other, targets=[(tiny, adapter)], **prompts)
    assert exc.value.message_dict["targets[0].adapter"] == [
        f"Adapter {adapter.pk} belongs to another project."
    ]


def test_cancel_stops_a_running_job_after_the_batch_in_progress(project, tiny, monkeypatch):
    job = generation_job_create(
        project=project,
        targets=[(tiny, None)],
        source=GenerationSource.PROMPTS,
        prompts=[f"Question {n}?" for n in range(6)],
        decoding={**GREEDY, "batch_size": 2, "max_new_tokens": 3},
    )
    real_flush = services._Progress.flush

    def cancel_after_first_batch(self, *, force=False):
        real_flush(self, force=force)
        if self.done == 2:
            generation_job_cancel(job=GenerationJob.objects.get(pk=job.pk))

    monkeypatch.setattr(services._Progress, "flush", cancel_after_first_batch)
    assert generation_job_execute(job.pk) == JobStatus.CANCELLED
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.cancel_requested and job.finished_at
    assert job.done == 2 and GenerationOutput.objects.filter(job=job).count() == 2
    assert "cancel requested: stopped before prompt 2" in job.log
    with pytest.raises(ValidationError) as exc:
        generation_job_cancel(job=job)
    assert "status" in exc.value.message_dict


def test_a_cancelled_queued_job_is_skipped_and_a_second_delivery_runs_nothing(project, tiny):
    queued = generation_job_create(
        project=project, targets=[(tiny, None)], source="prompts", prompts=["Hi"]
    )
    assert generation_job_cancel(job=queued).status == JobStatus.CANCELLED
    assert generation_job_execute(queued.pk) is None

    job = run_job(
        project=project, targets=[(tiny, None)], source="prompts", prompts=["Hi"],
        decoding={"max_new_tokens": 2},
    )  # fmt: skip
    assert generation_job_execute(job.pk) is None  # the message delivered again
    assert GenerationOutput.objects.filter(job=job).count() == 1
    assert GenerationJob.objects.get(pk=job.pk).finished_at == job.finished_at


def test_a_failure_ends_the_job_failed_with_the_traceback_in_its_log(project, tiny, settings):
    job = generation_job_create(
        project=project, targets=[(tiny, None)], source="prompts", prompts=["Hi"]
    )
    (Path(settings.STORAGE_DIR) / "models" / "tiny").unlink()  # the weights went away
    assert generation_job_execute(job.pk) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.finished_at
    assert job.error and "Traceback (most recent call last)" in job.log


def test_a_job_whose_heartbeat_went_stale_is_failed_by_the_sweep(project, tiny):
    stale, fresh = (
        generation_job_create(
            project=project, targets=[(tiny, None)], source="prompts", prompts=["Hi"]
        )
        for _ in range(2)
    )
    now = timezone.now()
    GenerationJob.objects.filter(pk=stale.pk).update(
        status=JobStatus.RUNNING, heartbeat_at=now - timedelta(minutes=11)
    )
    GenerationJob.objects.filter(pk=fresh.pk).update(
        status=JobStatus.RUNNING, heartbeat_at=now - timedelta(minutes=1)
    )
    assert generation_jobs_fail_stale() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == JobStatus.FAILED and "No heartbeat for 10 minutes" in stale.error
    assert fresh.status == JobStatus.RUNNING
    assert generation_jobs_fail_stale() == 0


def test_an_evaluation_job_tells_the_evaluation_service_when_its_answers_are_in(
    project, tiny, monkeypatch
):
    from training.services import evaluation

    called = []
    monkeypatch.setattr(
        evaluation, "evaluation_round_generated", lambda *, job: called.append(job.pk)
    )
    job = run_job(
        project=project,
        targets=[(tiny, None)],
        source="prompts",
        prompts=["Hi"],
        purpose=GenerationPurpose.EVALUATION,
        decoding={"max_new_tokens": 2},
    )
    assert called == [job.pk]
    assert not Item.objects.filter(source="generation").exists()  # evaluation: outputs only
