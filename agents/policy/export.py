"""Trained agents out in Hugging Face formats, loadable by the standard calls.

A LoRA agent is written as a peft adapter folder (``PeftModel.from_pretrained(base, folder)``
loads it onto its base model); a full-copy agent as a transformers model folder
(``AutoModelForCausalLM.from_pretrained(folder)``). Either folder also holds the tokenizer
and, when the agent has one, ``value_head.safetensors`` (the scalar head's ``weight`` and
``bias``). Folders are written under a temporary name and renamed into place.
:func:`merge_adapter` turns an adapter folder and its base model into one full model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from agents.policy.sharding import model_state

__all__ = ["VALUE_HEAD", "export_agent", "merge_adapter"]

VALUE_HEAD = "value_head.safetensors"
_PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export_agent(agent: Any, folder: str | Path, base_model: str | None = None) -> Path:
    """Write ``agent`` to ``folder`` (replacing it): its adapter or its full model, the
    tokenizer and the value head. ``base_model`` is recorded as the adapter's base. An
    FSDP-sharded agent's weights are gathered first (every process calls; the main writes)."""
    folder = Path(folder)
    sharded = getattr(agent, "sharded_over", None)
    weights = model_state(agent.model) if sharded is not None else None
    if sharded is not None and not sharded.is_main:
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if agent.is_lora:
            agent.model.save_pretrained(str(tmp), selected_adapters=[agent.adapter])
            saved = tmp / agent.adapter if (tmp / agent.adapter).is_dir() else tmp
            for name in _PEFT_FILES:  # peft puts a non-default adapter in a subfolder
                if saved != tmp:
                    shutil.move(str(saved / name), str(tmp / name))
            if saved != tmp:
                shutil.rmtree(saved)
            if base_model is not None:
                config = json.loads((tmp / "adapter_config.json").read_text())
                config["base_model_name_or_path"] = base_model
                (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        else:
            agent.model.save_pretrained(str(tmp), state_dict=weights)
        agent.tokenizer.save_pretrained(str(tmp))
        if agent.value_head is not None:
            state = {
                k: v.detach().cpu().contiguous() for k, v in agent.value_head.state_dict().items()
            }
            save_file(state, str(tmp / VALUE_HEAD))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def merge_adapter(adapter_folder: str | Path, base_model: Any, out: str | Path) -> Path:
    """Load the adapter of ``adapter_folder`` onto ``base_model`` (a transformers model, which
    is consumed), merge it into the weights and save the full model (with the tokenizer and
    value head beside it) to ``out``."""
    from peft import PeftModel

    adapter_folder, out = Path(adapter_folder), Path(out)
    merged = PeftModel.from_pretrained(base_model, str(adapter_folder)).merge_and_unload()
    merged.save_pretrained(str(out))
    for path in adapter_folder.iterdir():
        if path.name not in _PEFT_FILES and path.is_file():
            shutil.copy2(path, out / path.name)
    return out
