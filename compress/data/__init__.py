"""Task data: loaders for every supported format, carved splits, QA featurisation, cached model-ready splits, and
the transformations that make new examples from old ones.

loaders (files, encodings, `datasets`; text examples) · squad (QA examples from SQuAD JSON or `datasets`) ·
split (eval and test carved from train) · qa (QA windows and span decoding) · features (model-ready splits,
cached on disk) · augment (ν: new examples from the ones a student gets wrong).

`features` needs torch and is imported on first use (the module `__getattr__` below), so the loaders and QA
featurisation/decoding stay importable without torch: the HTTP service uses them.
"""

from typing import Any

from .augment import TRANSFORMS, Nu
from .loaders import DataError, QAExample, TextExample, load_text_examples
from .qa import QAPrediction, decode_qa, detect_version_2, featurize_qa
from .split import carve_splits, ids_hash, split_record
from .squad import load_qa_examples

_FEATURES = ("Split", "TaskData", "encode_texts", "load_split_examples", "prepare_task_data", "tokenizer_fingerprint")

__all__ = [
    "DataError",
    "Nu",
    "QAExample",
    "QAPrediction",
    "Split",
    "TRANSFORMS",
    "TaskData",
    "TextExample",
    "carve_splits",
    "decode_qa",
    "detect_version_2",
    "encode_texts",
    "featurize_qa",
    "ids_hash",
    "load_qa_examples",
    "load_split_examples",
    "load_text_examples",
    "prepare_task_data",
    "split_record",
    "tokenizer_fingerprint",
]


def __getattr__(name: str) -> Any:
    if name in _FEATURES:
        from . import features  # NOTE: torch, imported on first use (see the module docstring)

        return getattr(features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
