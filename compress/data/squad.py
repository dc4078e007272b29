"""Read extractive-QA examples: SQuAD 1.1/2.0 JSON files (whole, or selected articles) or `datasets` with SQuAD's
columns. Every bad question is reported with its file, article and paragraph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..config import SourceConfig
from .files import (
    DataError, file_encoding, hf_dataset, open_text, require_exists, resolve_source_path, source_format, subsample,
    undecodable_error,
)
from .loaders import QAExample

__all__ = ["load_qa_examples"]


def _squad_articles(path: Path, source: SourceConfig) -> list[dict[str, Any]]:
    encoding = file_encoding(path, source)
    try:
        with open_text(path, encoding) as fh:
            doc = json.load(fh)
    except UnicodeDecodeError as exc:
        raise undecodable_error(path, encoding, exc) from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path.name}: is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "a SQuAD file is one JSON object with a 'data' list"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path.name}: has no 'data' list of articles; is it a SQuAD JSON file?")
    return doc["data"]


def _select_articles(articles: list[dict[str, Any]], source: SourceConfig, name: str) -> list[dict[str, Any]]:
    if source.articles is None:
        return articles
    sl = source.article_slice()
    if sl is not None:
        chosen = articles[sl]
    else:
        titles = [a.get("title", "") for a in articles]
        unknown = [t for t in source.articles if t not in titles]
        if unknown:
            raise DataError(f"{name}: article {unknown[0]!r} not found; titles are {titles}")
        chosen = [a for a in articles if a.get("title", "") in source.articles]
    if not chosen:
        raise DataError(f"{name}: articles={source.articles!r} selects no article of {len(articles)}")
    return chosen


def _qa_from_squad(articles: list[dict[str, Any]], name: str) -> Iterator[QAExample]:
    for a_i, article in enumerate(articles):
        title = article.get("title", f"article-{a_i}")
        for p_i, para in enumerate(article.get("paragraphs", [])):
            context = para.get("context")
            if not isinstance(context, str) or not context.strip():
                raise DataError(f"{name}: article {title!r} paragraph {p_i} has no context text")
            for qa in para.get("qas", []):
                yield _qa_example(qa, title, context, f"{name}: article {title!r} paragraph {p_i}")


def _qa_example(qa: dict[str, Any], title: str, context: str, where: str) -> QAExample:
    qid = qa.get("id")
    question = qa.get("question")
    if not qid or not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: a question has no 'id' or no 'question' text ({qa!r:.120})")
    answers = []
    for ans in qa.get("answers", []) or []:
        text, start = ans.get("text"), ans.get("answer_start")
        if not isinstance(text, str) or not isinstance(start, int):
            raise DataError(f"{where} question {qid}: answer {ans!r} needs 'text' and an integer 'answer_start'")
        if context[start : start + len(text)] != text:
            raise DataError(
                f"{where} question {qid}: answer {text!r} is not found at answer_start={start} of the context "
                f"(the context there reads {context[start:start + len(text)]!r})"
            )
        answers.append((text, start))
    impossible = bool(qa.get("is_impossible", False))
    if impossible and answers:
        answers = []  # SQuAD 2.0 stores plausible (wrong) answers separately; gold is "no answer"
    if not impossible and not answers:
        raise DataError(
            f"{where} question {qid}: has no answers and is not marked is_impossible; "
            "mark unanswerable questions with is_impossible: true (SQuAD 2.0)"
        )
    return QAExample(str(qid), title, context, question, tuple(answers), impossible)


def _qa_from_hf(source: SourceConfig, path: Path) -> Iterator[QAExample]:
    ds = hf_dataset(source, path)
    needed = {"id", "context", "question", "answers"}
    missing = needed - set(ds.column_names)
    if missing:
        raise DataError(
            f"{source.path}: columns {sorted(missing)} not found (columns: {ds.column_names}); "
            "a QA data set needs the SQuAD columns id, title, context, question, answers"
        )
    for i, row in enumerate(ds):
        ans = row["answers"]
        qa = {
            "id": row["id"], "question": row["question"],
            "answers": [{"text": t, "answer_start": s} for t, s in zip(ans["text"], ans["answer_start"])],
            "is_impossible": len(ans["text"]) == 0,
        }
        yield _qa_example(qa, row.get("title", ""), row["context"], f"{source.path}[{i}]")


def load_qa_examples(sources: tuple[SourceConfig, ...], config_path: str | None = None) -> list[QAExample]:
    """Read every SQuAD source of a split; `limit` counts questions, `articles` selects articles."""
    examples: list[QAExample] = []
    for source in sources:
        path = resolve_source_path(source.path, config_path)
        fmt = source_format(source, path, qa=True)
        require_exists(path, fmt)
        if fmt == "squad":
            items = list(_qa_from_squad(_select_articles(_squad_articles(path, source), source, path.name), path.name))
        elif fmt == "hf":
            items = list(_qa_from_hf(source, path))
        else:
            raise DataError(f"{path.name}: format {fmt!r} cannot hold QA data; use squad JSON or a hf data set")
        if not items:
            raise DataError(f"{path.name}: holds no questions")
        examples.extend(subsample(items, source))
    seen: set[str] = set()
    for ex in examples:
        if ex.qid in seen:
            raise DataError(f"question id {ex.qid!r} appears twice in one split; ids must be unique")
        seen.add(ex.qid)
    return examples
