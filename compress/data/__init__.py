"""Task data: loaders for every supported format, QA featurisation, and cached model-ready splits."""

from .features import Split, TaskData, prepare_task_data, tokenizer_fingerprint
from .loaders import DataError, QAExample, TextExample, load_qa_examples, load_text_examples
from .qa import QAPrediction, decode_qa, detect_version_2, featurize_qa

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
