"""Task data: loaders for every supported format, QA featurisation, and cached model-ready splits.

`features` (model-ready splits) needs torch and is imported on first use, so the loaders and QA
featurisation/decoding stay importable without torch (the HTTP service uses them).
"""

from typing import Any

from .loaders import DataError, QAExample, TextExample, load_qa_examples, load_text_examples
from .qa import QAPrediction, decode_qa, detect_version_2, featurize_qa

_FEATURES = ("Split", "TaskData", "prepare_task_data", "tokenizer_fingerprint")

__all__ = [
    "DataError",
    "QAExample",
    "QAPrediction",
    "Split",
    "TaskData",
    "TextExample",
    "decode_qa",
    "detect_version_2",
    "featurize_qa",
    "load_qa_examples",
    "load_text_examples",
    "prepare_task_data",
    "tokenizer_fingerprint",
]


def __getattr__(name: str) -> Any:
    if name in _FEATURES:
        from . import features

        return getattr(features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
