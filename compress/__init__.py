"""compress: distil a fine-tuned BERT-family teacher into smaller, faster students and show the trade-offs."""

__version__ = "0.1.0"
