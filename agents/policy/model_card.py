"""The model card (``README.md``) of an exported model: Hugging Face's YAML front matter
(``base_model``, ``library_name``, ``tags``) and a short body naming the base, the task, the
command that trained it and the line that loads it.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelCard", "read_card", "run_command", "write_card"]


def run_command() -> str:
    """This process's command line as a shell would take it back (``python scripts/...``)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        argv = ["python", *argv]
    return shlex.join(argv)


@dataclass(frozen=True)
class ModelCard:
    """What a card says about one exported model."""

    name: str
    """The model's name in its run (``model_a``, ``policy``)."""
    task: str = ""
    """The task it was trained on (``--task``)."""
    command: str = field(default_factory=run_command)
    """The command that trained it."""
    method: str = "CORY"
    """``CORY`` or the baseline's name."""


def write_card(folder: Path, card: ModelCard, base: str | None, *, adapter: bool) -> Path:
    """Write ``folder/README.md`` for ``card`` (replacing peft's template); ``base`` is the
    recorded base model (``None`` for a full model without one)."""
    tags = ["cory", "reinforcement-learning", "text-generation"]
    front = {"library_name": "peft" if adapter else "transformers", "tags": tags}
    if base:
        front = {"base_model": base, **front}
        if adapter:
            tags.extend(["lora", f"base_model:adapter:{base}"])
    yaml = "\n".join(
        f"{k}: {json.dumps(v)}" if not isinstance(v, list) else f"{k}:\n" + _items(v)
        for k, v in front.items()
    )
    loader = (
        "from peft import AutoPeftModelForCausalLM\n"
        f'model = AutoPeftModelForCausalLM.from_pretrained("{folder.name}")'
        if adapter
        else "from transformers import AutoModelForCausalLM\n"
        f'model = AutoModelForCausalLM.from_pretrained("{folder.name}")'
    )
    lines = [
        "---",
        yaml,
        "---",
        "",
        f"# {card.name}",
        "",
        f"{'A LoRA adapter' if adapter else 'A causal language model'} trained with "
        f"{card.method} (reinforcement learning; https://github.com/Harry67Hu/CORY).",
        "",
        f"- **Base model:** `{base or 'none recorded'}`",
        f"- **Task:** `{card.task or 'not recorded'}`",
        f"- **Command:** `{card.command}`",
        "",
        "```python",
        loader,
        "```",
        "",
        "`value_head.safetensors`, when present, holds the value head (`weight`, `bias`).",
        "",
    ]
    path = folder / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def read_card(folder: Path, name: str | None = None) -> ModelCard:
    """The card :func:`write_card` wrote in ``folder`` (the fields it does not find empty),
    renamed ``name`` if given."""
    path = folder / "README.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    found = dict(re.findall(r"^- \*\*(Task|Command):\*\* `(.*)`$", text, flags=re.M))
    method = re.search(r" trained with (.+?) \(reinforcement", text)
    return ModelCard(
        name or folder.name,
        task=found.get("Task", "").replace("not recorded", ""),
        command=found.get("Command", ""),
        method=method.group(1) if method else "CORY",
    )


def _items(values: list[str]) -> str:
    return "\n".join(f"- {json.dumps(v)}" for v in values)
