"""Generated unanswerable questions: never a question's own paragraph nor one holding its answer, counts as
configured, same article first, training split only, recorded in split.json's row ids and the feature cache key."""

from __future__ import annotations

import json

import pytest

from compress.config import ConfigError, NegativesConfig, from_mapping
from compress.data.loaders import QAExample
from compress.data.negatives import generate_negatives, negatives_record


def _articles(n_articles=3, paragraphs=4, questions=3) -> list[QAExample]:
    out = []
    for a in range(n_articles):
        for p in range(paragraphs):
            ctx = f"Paragraph {p} of article {a} tells of thing{a}x{p} and of other matters at length."
            for q in range(questions):
                answer = f"thing{a}x{p}"
                out.append(QAExample(f"a{a}p{p}q{q}", f"Article{a}", ctx, f"What does paragraph {p} tell of ({q})?",
                                     ((answer, ctx.index(answer)),), False))
    return out


def test_counts_own_paragraph_and_answer_rules():
    examples = _articles()
    made = generate_negatives(examples, NegativesConfig(ratio=0.5, seed=1))
    assert len(made) == round(0.5 * len(examples)) == 18
    by_qid = {ex.qid: ex for ex in examples}
    for neg in made:
        src = by_qid[neg.qid.removesuffix("-negative")]
        assert neg.question == src.question and neg.answers == () and neg.is_impossible
        assert neg.context != src.context
        assert src.answers[0][0].lower() not in neg.context.lower()
        assert neg.title == src.title  # every article has other paragraphs: same article first
    assert len({n.qid for n in made}) == len(made)
    rec = negatives_record(examples, made, NegativesConfig(ratio=0.5, seed=1))
    assert rec["made"] == rec["requested"] == 18 and rec["same_article_made"] == 18
    assert generate_negatives(examples, NegativesConfig(ratio=0.0)) == []
    assert [n.qid for n in generate_negatives(examples, NegativesConfig(ratio=0.5, seed=1))] == [n.qid for n in made]
    assert [n.qid for n in generate_negatives(examples, NegativesConfig(ratio=0.5, seed=2))] != [n.qid for n in made]


def test_a_paragraph_holding_the_answer_is_never_chosen_and_other_articles_fill_in():
    ctx_a = "Rollo led the raiders. Normandy is in France."
    ctx_b = "Also about Rollo, who led the raiders north."  # holds the answer: must not be chosen
    ctx_c = "The Saxons lived in England long before."
    examples = [QAExample("q1", "Normans", ctx_a, "Who led the raiders?", (("Rollo", 0),), False),
                QAExample("q2", "Normans", ctx_b, "Who went north?", (("Rollo", ctx_b.index("Rollo")),), False),
                QAExample("q3", "Saxons", ctx_c, "Where did the Saxons live?", (("England", ctx_c.index("England")),),
                          False)]
    for seed in range(10):
        made = {n.qid: n for n in generate_negatives(examples, NegativesConfig(ratio=1.0, seed=seed))}
        assert made["q1-negative"].context == ctx_c and made["q2-negative"].context == ctx_c
        assert made["q3-negative"].context in (ctx_a, ctx_b) and made["q3-negative"].title == "Normans"
    assert all(n.title != "Normans" or n.qid == "q3-negative"
               for n in generate_negatives(examples, NegativesConfig(ratio=1.0, same_article=False)))


def test_only_the_training_split_is_extended(tmp_path, tokenizer):
    from compress.data.features import prepare_task_data
    from tests.conftest import job_config

    doc = {"version": "1.1", "data": [
        {"title": f"T{a}", "paragraphs": [
            {"context": f"Para {p} of {a} names item{a}{p} once.",
             "qas": [{"id": f"{a}-{p}", "question": f"Which item is in para {p} of {a}?",
                      "answers": [{"text": f"item{a}{p}", "answer_start": len(f"Para {p} of {a} names ")}]}]}
            for p in range(3)]} for a in range(4)]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(doc))
    raw = job_config(tmp_path, {"type": "qa"}, {"path": str(path), "articles": "0:3"},
                     {"path": str(path), "articles": "3:4"}, "unused")
    raw["data"].update(max_seq_length=32, doc_stride=8, negatives={"ratio": 0.5, "seed": 0})
    cfg = from_mapping(raw)
    data = prepare_task_data(cfg, tokenizer)
    train_titles = {ex.title for ex in data.train.examples}
    negatives = [ex for ex in data.train.examples if ex.qid.endswith("-negative")]
    assert len(negatives) == round(0.5 * 9) and train_titles == {"T0", "T1", "T2"}  # T3 (eval) never lends one
    assert not [ex for ex in data.eval.examples if ex.qid.endswith("-negative")]
    assert data.version_2  # the training split now teaches abstaining
    split = json.loads((cfg.run_dir / "split.json").read_text())
    assert split["splits"]["train"]["rows"] == 9 + len(negatives)
    assert split["negatives"]["made"] == split["negatives"]["requested"] == len(negatives)
    assert split["negatives"]["answerable"] == 9 and split["negatives"]["ratio"] == 0.5
    # another ratio is another training split: other features, another cache key
    raw["data"]["negatives"]["ratio"] = 1.0
    raw["name"] = "t2"
    other = prepare_task_data(from_mapping(raw), tokenizer)
    assert other.train.key != data.train.key and data.eval.key == other.eval.key


def test_negatives_are_refused_outside_qa(tmp_path):
    from tests.conftest import job_config

    raw = job_config(tmp_path, {"type": "classification"}, "a.tsv", "b.tsv", "unused")
    raw["data"]["negatives"] = {"ratio": 0.3}
    with pytest.raises(ConfigError, match="data.negatives.ratio.*for extractive QA"):
        from_mapping(raw)
    with pytest.raises(ConfigError, match="data.negatives.ratio"):
        NegativesConfig(ratio=1.5)
