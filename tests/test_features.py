"""Feature extraction: with a frozen encoder the head trains on outputs encoded once."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import MINILM, TINY_CONFIG, compose_config
from tfbert.backbone import load_backbone
from tfbert.classifier import build_classifier
from tfbert.export import export_run
from tfbert.features import build_head_model, encode_split, feature_extraction
from tfbert.heads import LastLayersClsHead, MeanPoolingHead, PoolerHead
from tfbert.pipeline import Pipeline, batch_stats
from tfbert.train import run


def token_batches(tokenizer, texts, labels, pipeline, training=False):
    import datasets

    encoded = tokenizer(texts, truncation=True, max_length=32)
    split = datasets.Dataset.from_dict(
        {"input_ids": encoded["input_ids"], "token_type_ids": encoded["token_type_ids"], "label": labels}
    )
    return pipeline(split, training=training)


TEXTS = ["a fine film", "the plot drags on and on for far too long", "bad", "wonderful, moving and funny",
         "I did not like it at all", "great cast", "a tedious, overlong mess of a movie", "ok"]
LABELS = [1, 0, 0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("head_class", [PoolerHead, MeanPoolingHead, LastLayersClsHead])
def test_head_on_encoded_features_equals_the_classifier(head_class, tokenizer):
    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG, freeze="all")
    head = head_class(num_outputs=2, **({"num_layers": 2} if head_class is LastLayersClsHead else {}))
    classifier = build_classifier(backbone, head)
    pipeline = Pipeline(batch_size=3, bucket_boundaries=[4, 8])
    batches = token_batches(tokenizer, TEXTS, LABELS, pipeline)
    encoded = encode_split(backbone, batches, hidden_states="hidden_states" in head.reads)
    assert len(encoded) == len(TEXTS)
    assert ("hidden_states" in encoded.features) == (head_class is LastLayersClsHead)
    assert encoded.features["attention_mask"].all()  # only real tokens are kept
    assert encoded.features["last_hidden_state"].shape == (encoded.lengths.sum(), 32)
    head_model = build_head_model(head, encoded.signature())
    from_tokens = np.concatenate([classifier(tokens, training=False).numpy() for tokens, _ in batches])
    labels_from_tokens = np.concatenate([labels.numpy() for _, labels in batches])
    # Re-batched features (other padding, same examples in the same order) give the same logits.
    feature_batches = encoded.dataset(Pipeline(batch_size=8, bucket_boundaries=[64]))
    from_features = np.concatenate([head_model(features, training=False).numpy() for features, _ in feature_batches])
    labels_from_features = np.concatenate([labels.numpy() for _, labels in feature_batches])
    np.testing.assert_array_equal(labels_from_features, labels_from_tokens)
    np.testing.assert_allclose(from_features, from_tokens, atol=1e-5)


def test_encoded_batches_are_reshuffled_and_padded_like_tokens(tokenizer):
    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG, freeze="all")
    head = MeanPoolingHead(num_outputs=2)
    build_classifier(backbone, head)
    pipeline = Pipeline(batch_size=3, bucket_boundaries=[4, 8], seed=1)
    # 24 examples: two epochs in the same order would be a 1-in-millions coincidence
    train_tokens = token_batches(tokenizer, TEXTS * 3, LABELS * 3, pipeline, training=True)
    validation_tokens = token_batches(tokenizer, TEXTS[:4], LABELS[:4], pipeline)
    _, train, validation = feature_extraction(backbone, head, pipeline, train_tokens, validation_tokens)
    token_stats, feature_stats = batch_stats(train_tokens), batch_stats(train)
    for key in ("batches", "examples", "real_tokens"):
        assert feature_stats[key] == token_stats[key]
    assert batch_stats(validation)["examples"] == 4
    for features, _ in train:  # padding rows are zeros and masked
        padding = features["attention_mask"].numpy() == 0
        assert not features["last_hidden_state"].numpy()[padding].any()
    # each example is identified by its first token's first feature
    first, second = ([features["last_hidden_state"][:, 0, 0].numpy().tolist() for features, _ in train] for _ in range(2))
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and first != second  # every epoch reshuffled


@pytest.fixture(scope="module")
def frozen_run(snippets_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("frozen_run")
    cfg = compose_config(
        "model=tiny", "model.freeze=all", "head=last4_cls", "head.num_layers=2", f"task.data_file={snippets_file}",
        "trainer.epochs=3", "pipeline.batch_size=16", "optimizer.learning_rate=1e-2", f"run_dir={run_dir}",
    )
    return run_dir, run(cfg), cfg


def test_frozen_run_restores_its_best_epoch_and_exports_it(frozen_run):
    run_dir, metrics, cfg = frozen_run
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    # the best epoch is restored into the whole classifier before evaluation
    assert metrics["validation"]["accuracy"] == pytest.approx(best["value"], abs=1e-6)
    # the checkpoint holds the whole classifier: a re-export rebuilds it from config + checkpoint
    export = export_run(run_dir, version=2)
    served = tf.saved_model.load(str(export)).signatures["serving_default"]
    probabilities = served(text=tf.constant(["a wonderful film", "dull"]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    original = tf.saved_model.load(str(run_dir / "export" / "sentiment" / "1")).signatures["serving_default"]
    np.testing.assert_allclose(
        original(text=tf.constant(["a wonderful film", "dull"]))["probabilities"].numpy(), probabilities, atol=1e-6
    )


def test_fit_on_features_trains_the_classifier_head_and_nothing_else(tokenizer, tmp_path):
    from tfbert.objectives import loss_and_metrics
    from tfbert.optimization import create_adamw
    from tfbert.trainer import Trainer

    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG, freeze="all")
    head = MeanPoolingHead(num_outputs=2)
    classifier = build_classifier(backbone, head)
    encoder_before = [weight.numpy() for weight in backbone.weights]
    head_before = [weight.numpy() for weight in head.weights]
    pipeline = Pipeline(batch_size=4, bucket_boundaries=[8])
    train_tokens = token_batches(tokenizer, TEXTS, LABELS, pipeline, training=True)
    validation_tokens = token_batches(tokenizer, TEXTS, LABELS, pipeline)
    head_model, train, validation = feature_extraction(backbone, head, pipeline, train_tokens, validation_tokens)
    loss, metrics = loss_and_metrics("single_label")
    steps = batch_stats(train_tokens)["batches"]
    Trainer(epochs=3).fit(
        head_model, create_adamw(num_train_steps=3 * steps, learning_rate=1e-2), loss, metrics, train, steps, validation,
        tmp_path, checkpoint_model=classifier,
    )
    for before, after in zip(encoder_before, backbone.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert any(not np.array_equal(before, after.numpy()) for before, after in zip(head_before, head.weights))
    # the classifier on tokens and the head model on features agree after training
    from_tokens = np.concatenate([classifier(tokens, training=False).numpy() for tokens, _ in validation_tokens])
    from_features = np.concatenate([head_model(features, training=False).numpy() for features, _ in validation])
    np.testing.assert_allclose(from_features, from_tokens, atol=1e-5)
    assert (tmp_path / "checkpoints" / "best.json").is_file()
