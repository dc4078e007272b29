"""compress: distil a fine-tuned BERT-family teacher into smaller, faster students and show the trade-offs."""

import os

# This tool runs offline by design: models and data sets come from local folders or the local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

__version__ = "0.1.0"
