"""The plugin as installed: its components, its config and defaults, its prompts, and how a task is built and
routed."""

from __future__ import annotations

import pytest
from matrix_naturalreasoning.config import Keep, NRConfig
from matrix_naturalreasoning.prompts import FILTER_PROMPT, QUESTION_PROMPT, SCORE_PROMPT
from matrix_naturalreasoning.replies import ExamQuestion, Scores
from matrix_naturalreasoning.workflow import NROrchestrator

from matrix_core import BadRowError, ConfigError, ResolvedConfig, RunMetrics, Usage, resolve_config
from matrix_core.testing import installed_plugins

ROW = {"text": "A thread.", "url": "https://forum.example.org/t/1"}


def resolve(*overrides: str) -> ResolvedConfig:
    return resolve_config("naturalreasoning", overrides=overrides)


def test_the_plugin_registers_the_workflow_and_its_three_agents():
    info = next(info for info in installed_plugins().infos if info.name == "naturalreasoning")
    assert info.status == "ok", info.error
    assert info.components == {
        "orchestrators": ["naturalreasoning"],
        "agents": ["naturalreasoning.filter", "naturalreasoning.score", "naturalreasoning.question"],
    }


def test_defaults_run_the_bundled_sample_on_the_local_backend():
    resolved = resolve()
    settings = resolved.config
    assert settings.backend.type == "local"
    assert settings.input.id_key == "metadata.WARC-Record-ID"
    assert settings.input.path.endswith("matrix_naturalreasoning/data/web_sample.jsonl")
    assert (settings.nr.min_en, settings.nr.keep) == (0.8, Keep.success)
    filter_, score, question = (settings.agents[role].sampling for role in ("filter", "score", "question"))
    assert (filter_.temperature, filter_.top_p, filter_.max_tokens) == (1.0, 0.95, 8)
    assert (score.temperature, score.top_p, score.max_tokens) == (0.2, 0.9, 256)
    assert (question.temperature, question.top_p, question.max_tokens) == (0.0, 0.9, 384)
    assert resolved.profile_note() == (
        "demo profile: agents.score.sampling.max_tokens=256 (reference 10240), "
        "agents.question.sampling.max_tokens=384 (reference 20480), run.stall_timeout_s=3600.0 (reference 600.0)"
    )


def test_a_real_server_gets_the_reference_pipelines_sampling():
    resolved = resolve("backend.type=openai", "backend.base_url=http://127.0.0.1:9/v1")
    assert resolved.profile is None
    filter_, score, question = (resolved.config.agents[role].sampling for role in ("filter", "score", "question"))
    assert (filter_.temperature, filter_.top_p, filter_.max_tokens) == (1.0, 0.95, 8)
    assert (score.temperature, score.top_p, score.max_tokens) == (0.2, 0.9, 10240)
    assert (question.temperature, question.top_p, question.max_tokens) == (0.0, 0.9, 20480)


def test_the_schema_defaults_are_the_papers_sampling():
    from matrix_naturalreasoning.config import QuestionConfig, ScoreConfig

    assert ScoreConfig().sampling.max_tokens == 10240
    assert QuestionConfig().sampling.max_tokens == 20480


def test_each_role_has_its_own_backend_defaulting_to_the_global_one():
    resolved = resolve(
        "backend.type=openai",
        "backend.base_url=http://big:8000/v1",
        "agents.filter.backend.base_url=http://small:8000/v1",
        "agents.filter.backend.model=small",
    )
    backends = resolved.role_backends
    assert (backends["filter"].base_url, backends["filter"].model) == ("http://small:8000/v1", "small")
    assert backends["score"].base_url == backends["question"].base_url == "http://big:8000/v1"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nr.keep=some", "nr.keep"),
        ("nr.min_en=high", "nr.min_en"),
        ("nr.unknown=1", "nr.unknown"),
        ("agents.score.sampling.temprature=0.5", "agents.score.sampling.temprature"),
    ],
)
def test_bad_options_are_rejected_with_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(override)


def test_the_prompts_are_the_methods_own():
    assert FILTER_PROMPT.startswith("Analyze the text below as thoroughly as possible.")
    assert FILTER_PROMPT.endswith("**IMPORTANT**: Directly answer Yes or No.\n\n### Text\n")
    assert SCORE_PROMPT.startswith("Evaluate the text below according to the scoring instruction and criteria.")
    assert '{"criteria_1": 1, "criteria_2": 0, "criteria_3": 0.5, "criteria_4": -1}' in SCORE_PROMPT
    assert QUESTION_PROMPT.startswith("Extract a question that requires deep thinking and reasoning")
    categories = [
        "Architecture",
        "Arts & Entertainment",
        "Biology",
        "Chemistry",
        "Computer Science",
        "Economics & Business",
        "Food",
        "Geography",
        "History",
        "Law",
        "Mathematics",
        "Medicine & Health",
        "Other",
        "Philosophy",
        "Physics",
        "Politics",
        "Social & Behavioral Sciences",
    ]
    assert len(categories) == 17 and all(f"  - {category}  \n" in QUESTION_PROMPT for category in categories)
    assert QUESTION_PROMPT.endswith("```\n## Text\n")


def test_a_task_routes_filter_score_question_and_stops_when_it_ends():
    task = NROrchestrator.from_row("1", ROW, NRConfig())
    assert task.next_role() == "filter"
    task.survived += ["en", "filter"]
    assert task.next_role() == "score"
    task.survived.append("score")
    assert task.next_role() == "question"
    task.stop("no_boxed_answer", "reply")
    assert task.next_role() is None and (task.status, task.reason, task.stop_reply) == (
        "filtered",
        "no_boxed_answer",
        "reply",
    )


def test_keep_success_drops_every_other_document():
    task = NROrchestrator.from_row("1", ROW, NRConfig())
    task.stop("en")
    assert not task.keep()
    assert NROrchestrator.from_row("2", ROW, NRConfig(keep=Keep.all)).keep()


def test_a_success_record_has_the_question_scores_and_tokens_per_stage():
    task = NROrchestrator.from_row("1", ROW, NRConfig())
    task.survived += ["en", "filter", "score", "question"]
    task.scores = Scores(1, 2, 0.5, 1)
    task.question = ExamQuestion("Q?", "Physics", "", ["Therefore, the final answer is: \\boxed{1}."])
    task.spend("filter", Usage(100, 1))
    task.spend("question", Usage(300, 50))
    task.finish("success")
    record = task.to_record()
    assert record["exam_question"] == "Q?" and record["question_category"] == "Physics"
    assert record["scores"] == {"criteria_1": 1, "criteria_2": 2, "criteria_3": 0.5, "criteria_4": 1}
    assert record["usage"]["score"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert (task.prompt_tokens, task.completion_tokens) == (400, 51)
    assert task.metrics() == {
        "survived_en": 1.0,
        "survived_filter": 1.0,
        "survived_score": 1.0,
        "survived_question": 1.0,
        "filter_tokens": 101.0,
        "score_tokens": 0.0,
        "question_tokens": 350.0,
    }


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"url": "u"}, "field 'text' must be a string, got NoneType"),
        ({"text": ["a"]}, "field 'text' must be a string, got list"),
        ({"text": "a", "url": 3}, "field 'url' must be a string, got int"),
        ({"text": "a", "language_id_whole_page_fasttext": {"en": "x"}}, "field 'language_id_whole_page_fasttext.en'"),
    ],
)
def test_a_row_the_workflow_cannot_use_is_a_bad_row(row, message):
    with pytest.raises(BadRowError, match=message):
        NROrchestrator.from_row("1", row, NRConfig())


def test_min_en_must_be_a_probability(tmp_path):
    settings = tmp_path / "nr.yaml"
    settings.write_text("nr:\n  min_en: 1.5\n")
    with pytest.raises(ConfigError) as raised:
        resolve_config("naturalreasoning", config_files=[str(settings)])
    assert str(raised.value) == f"{settings}:2: nr.min_en: must be from 0 to 1, got 1.5"
    with pytest.raises(ConfigError, match=r"^override #1: nr\.min_en: must be from 0 to 1, got -0\.1$"):
        resolve("nr.min_en=-0.1")
    assert NROrchestrator.from_row("1", ROW, NRConfig(min_en=1.5)).id == "1", "a row no longer checks the config"


def test_the_summary_compares_survival_with_the_paper():
    metrics = RunMetrics(
        tasks=200,
        tasks_per_s=12.5,
        status_reason={"filtered:en": 120, "filtered:classifier": 60, "success": 20},
        workflow={
            "survived_en": 0.4,
            "survived_filter": 0.1,
            "survived_score": 0.1,
            "survived_question": 0.1,
            "filter_tokens": 500.0,
            "score_tokens": 100.0,
            "question_tokens": 80.5,
        },
    )
    assert NROrchestrator.summary(metrics) == (
        "survival: en 40.0% -> filter 10.0% -> score 10.0% -> question 10.0% (the paper: 5.45% of DCLM); "
        "12.50 documents/s; tokens: filter 100,000, score 20,000, question 16,100\n"
        "reasons: filtered:classifier 60, filtered:en 120, success 20"
    )
    assert NROrchestrator.summary(RunMetrics()) is None
