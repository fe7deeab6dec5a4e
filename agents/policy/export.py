"""Trained agents out in Hugging Face formats, loadable by the standard calls.

A LoRA agent is written as a peft adapter folder (``PeftModel.from_pretrained(base, folder)``
loads it onto its base model); a full-copy agent as a transformers model folder
(``AutoModelForCausalLM.from_pretrained(folder)``). Either folder also holds the tokenizer,
a model card (``README.md``: base, task, command) and, when the agent has one,
``value_head.safetensors`` (the scalar head's ``weight`` and ``bias``). Folders are written
under a temporary name and renamed into place.

An adapter records its base as the standard calls resolve it offline: the hub id of a hub
model, the absolute folder of a local one, and for a GGUF file or an alias the converted
folder the project loaded (``agents.policy.loading.gguf_cache``), so
``AutoPeftModelForCausalLM.from_pretrained(folder)`` needs nothing else. :func:`write_base`
copies the base next to the adapters and points them at it by a relative path
(:func:`base_of` resolves one against the adapter's folder). :func:`merge_adapter` turns an
adapter folder and its base model into one full model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from agents.policy.construction import hf_model
from agents.policy.model_card import ModelCard, read_card, write_card
from agents.policy.sharding import model_state

__all__ = [
    "VALUE_HEAD",
    "base_of",
    "export_agent",
    "merge_adapter",
    "point_adapter",
    "recorded_base",
    "write_base",
]

VALUE_HEAD = "value_head.safetensors"
_PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


@contextmanager
def _written_whole(out: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``out`` to write into, renamed to ``out`` (replacing
    it) when the block ends, removed if it raises: ``out`` is written whole or not at all."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recorded_base(agent: Any) -> str | None:
    """The base model of ``agent`` as transformers loaded it (its ``name_or_path``: a hub id
    or an absolute folder; ``None`` for a model built in memory)."""
    return str(getattr(hf_model(agent.model), "name_or_path", "") or "") or None


def export_agent(
    agent: Any, folder: str | Path, base_model: str | None = None, *, card: ModelCard | None = None
) -> Path:
    """Write ``agent`` to ``folder`` (replacing it): its adapter or its full model, the
    tokenizer, the value head and the model card ``card`` (named after the folder when
    ``None``). ``base_model`` (default :func:`recorded_base`) is recorded as the base. An
    FSDP-sharded agent's weights are gathered first (every process calls; the main writes)."""
    folder = Path(folder)
    base = base_model or recorded_base(agent)
    sharded = getattr(agent, "sharded_over", None)
    weights = model_state(agent.model) if sharded is not None else None
    if sharded is not None and not sharded.is_main:
        return folder
    with _written_whole(folder) as tmp:
        if agent.is_lora:
            agent.model.save_pretrained(str(tmp), selected_adapters=[agent.adapter])
            saved = tmp / agent.adapter if (tmp / agent.adapter).is_dir() else tmp
            for name in _PEFT_FILES:  # peft puts a non-default adapter in a subfolder
                if saved != tmp:
                    shutil.move(str(saved / name), str(tmp / name))
            if saved != tmp:
                shutil.rmtree(saved)
            if base is not None:
                point_adapter(tmp, base)
        else:
            agent.model.save_pretrained(str(tmp), state_dict=weights)
        agent.tokenizer.save_pretrained(str(tmp))
        if agent.value_head is not None:
            state = {
                k: v.detach().cpu().contiguous() for k, v in agent.value_head.state_dict().items()
            }
            save_file(state, str(tmp / VALUE_HEAD))
        write_card(tmp, card or ModelCard(folder.name), base, adapter=agent.is_lora)
    return folder


def point_adapter(folder: str | Path, base: str) -> None:
    """Record ``base`` as the base model of the adapter in ``folder`` (config and card)."""
    path = Path(folder) / "adapter_config.json"
    config = json.loads(path.read_text())
    old = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = base
    path.write_text(json.dumps(config, indent=2))
    card = Path(folder) / "README.md"
    if old and old != base and card.is_file():
        card.write_text(card.read_text(encoding="utf-8").replace(old, base), encoding="utf-8")


def base_of(adapter_folder: str | Path) -> str | None:
    """The base recorded by the adapter in ``adapter_folder``, a relative path resolved
    against that folder (where :func:`write_base` points), else as recorded."""
    folder = Path(adapter_folder)
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if base and not Path(base).is_absolute() and (folder / base / "config.json").is_file():
        return str((folder / base).resolve())
    return base or None


def write_base(base: str, out: str | Path) -> Path:
    """Save the base model ``base`` (hub id or folder, as an adapter records it) with its
    tokenizer as a plain transformers folder at ``out`` (written whole or not at all)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    with _written_whole(out) as tmp:
        AutoModelForCausalLM.from_pretrained(base).save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(base).save_pretrained(str(tmp))
    return out


def merge_adapter(adapter_folder: str | Path, base_model: Any, out: str | Path) -> Path:
    """Load the adapter of ``adapter_folder`` onto ``base_model`` (a transformers model, which
    is consumed), merge it into the weights and save the full model (with the tokenizer, the
    value head and a model card) to ``out``, under a temporary name renamed into place."""
    from peft import PeftModel

    adapter_folder, out = Path(adapter_folder), Path(out)
    base = base_of(adapter_folder)
    merged = PeftModel.from_pretrained(base_model, str(adapter_folder)).merge_and_unload()
    with _written_whole(out) as tmp:
        merged.save_pretrained(str(tmp))
        for path in adapter_folder.iterdir():
            if path.name not in (*_PEFT_FILES, "README.md") and path.is_file():
                shutil.copy2(path, tmp / path.name)
        write_card(tmp, read_card(adapter_folder, out.name), base, adapter=False)
    return out
