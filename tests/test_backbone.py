import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import MINILM, TINY_CONFIG, TINY_NO_DROPOUT, sharpen
from tfbert.backbone import load_backbone
from tfbert.classifier import encoder_features
from tfbert.model_dir import BackboneNotFound, resolve_model_dir
from tfbert.preprocessing import load_tokenizer


def mean_pooled(backbone, tokenizer, texts):
    tokens = tokenizer(texts, padding=True, return_tensors="tf")
    hidden = backbone(**tokens).last_hidden_state  # (batch, seq, hidden)
    mask = tf.cast(tokens["attention_mask"], tf.float32)[:, :, None]
    pooled = tf.reduce_sum(hidden * mask, 1) / tf.reduce_sum(mask, 1)
    return tf.math.l2_normalize(pooled, -1).numpy()


@pytest.fixture(scope="module")
def minilm():
    return load_backbone(MINILM)


@pytest.mark.slow
def test_minilm_weights_are_the_pretrained_ones(minilm, tokenizer):
    # all-MiniLM-L6-v2 was trained so that mean-pooled paraphrases sit close together.
    a, b, unrelated = mean_pooled(
        minilm, tokenizer,
        ["A man is eating food.", "A man is eating a meal.", "The stock market fell sharply today."],
    )
    assert a @ b > 0.85
    assert a @ unrelated < 0.3
    assert minilm.config.num_hidden_layers == 6 and minilm.config.hidden_size == 384


@pytest.mark.slow
def test_pytorch_safetensors_load_without_torch():
    # torch may be installed (the bench extra); block its import to prove it is not needed
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import tfbert\n"
        "from tfbert.backbone import load_backbone\n"
        f"print(load_backbone({MINILM!r}).config.hidden_size)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("384")


@pytest.mark.slow
def test_local_directory_loads_the_same_weights(minilm, tokenizer, tmp_path):
    local = shutil.copytree(resolve_model_dir(MINILM), tmp_path / "minilm")
    from_dir = load_backbone(str(local))
    tokens = tokenizer(["same weights either way"], return_tensors="tf")
    np.testing.assert_allclose(
        from_dir(**tokens).last_hidden_state.numpy(), minilm(**tokens).last_hidden_state.numpy(), atol=1e-6
    )


def test_random_init_uses_the_overrides(tiny_backbone):
    config = tiny_backbone.config
    assert (config.hidden_size, config.num_hidden_layers) == (32, 2)
    assert config.vocab_size == 30522  # MiniLM's vocabulary, so its tokenizer fits
    word_embeddings = tiny_backbone.bert.embeddings.weight
    assert tuple(word_embeddings.shape) == (30522, 32)


def test_a_misspelt_config_override_is_named():
    with pytest.raises(ValueError, match=r"config_overrides \['hidden_dropout'\] are not BertConfig fields; its own fields: .*hidden_dropout_prob"):
        load_backbone(MINILM, random_init=True, config_overrides={**TINY_CONFIG, "hidden_dropout": 0.2})


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    local = shutil.copytree(resolve_model_dir(MINILM), tmp_path / "minilm")
    config = (local / "config.json").read_text().replace('"num_hidden_layers": 6', '"num_hidden_layers": 8')
    (local / "config.json").write_text(config)
    with pytest.raises(BackboneNotFound, match="does not fit a BERT of this config"):
        load_backbone(str(local))


@pytest.mark.parametrize(
    "config, message",
    [
        ('{"model_type": "roberta", "hidden_size": 32}', r"is a 'roberta' model .*config.json\); tfbert fine-tunes BERT encoders"),
        ("[1, 2]", r"config.json is not a JSON object"),
        ("{not json", r"config.json is not a JSON object"),
    ],
    ids=["roberta", "json_list", "not_json"],
)
def test_a_config_of_another_architecture_is_named_before_any_weights_load(config, message, tmp_path):
    (tmp_path / "config.json").write_text(config)
    for load in (resolve_model_dir, load_tokenizer):
        with pytest.raises(BackboneNotFound, match=message):
            load(str(tmp_path))


@pytest.mark.parametrize("name", ["no_such_package", "/no/such/dir"])
def test_unknown_model_names_what_is_accepted(name):
    with pytest.raises(BackboneNotFound, match="directory with config.json") as error:
        load_backbone(name, random_init=True, config_overrides=TINY_CONFIG)
    assert name in str(error.value)


def trainable_parts(backbone):
    """Which parts of the encoder would train: embeddings, layer_._0.., pooler."""
    parts = [re.search(r"/(embeddings|layer_\._\d+|pooler)/", variable.name)[1] for variable in backbone.trainable_variables]
    return sorted(set(parts))


@pytest.mark.parametrize(
    "kwargs, parts",
    [
        ({}, ["embeddings", "layer_._0", "layer_._1", "pooler"]),
        ({"freeze": "embeddings"}, ["layer_._0", "layer_._1", "pooler"]),
        ({"freeze": "all"}, []),
        ({"trainable_layers": 1}, ["layer_._1", "pooler"]),
        ({"trainable_layers": 0}, ["pooler"]),
    ],
    ids=["none", "embeddings", "all", "top_1", "top_0"],
)
def test_what_trains(kwargs, parts):
    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG, **kwargs)
    assert trainable_parts(backbone) == parts


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"freeze": "encoder"}, "freeze must be one of none, embeddings, all; got 'encoder'"),
        ({"trainable_layers": 3}, "a whole number from 0 to the encoder's 2 layers .* got 3"),
        ({"trainable_layers": -1}, "got -1"),
        ({"trainable_layers": "two"}, "a whole number from 0 to the encoder's 2 layers .* got 'two'"),
        ({"freeze": "all", "trainable_layers": 1}, "freeze='all' .* trainable_layers=1"),
    ],
)
def test_bad_freeze_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG, **kwargs)


def test_finding_a_model_loads_no_tensorflow():
    # bench/speed.py's PyTorch worker finds the model this way and must not load TensorFlow.
    code = "import sys; from tfbert.model_dir import resolve_model_dir; resolve_model_dir(sys.argv[1]); " \
           "sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code, MINILM], timeout=120).returncode == 0


def tiny_batch(tokenizer):
    return dict(tokenizer(["a short one", "a somewhat longer sentence than that", "mid length here"],
                          padding=True, return_tensors="tf"))


def test_cls_only_gives_the_full_models_cls_outputs(tokenizer):
    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)
    tokens = tiny_batch(tokenizer)
    full = backbone(**tokens)
    cls = backbone(**tokens, cls_only=True)
    assert cls.last_hidden_state.shape == (3, 1, TINY_CONFIG["hidden_size"])
    np.testing.assert_allclose(cls.last_hidden_state.numpy(), full.last_hidden_state[:, :1].numpy(), atol=1e-5)
    np.testing.assert_allclose(cls.pooler_output.numpy(), full.pooler_output.numpy(), atol=1e-5)


def test_cls_only_gives_the_full_models_gradients(tokenizer):
    backbone = load_backbone(
        MINILM, random_init=True,
        config_overrides=TINY_NO_DROPOUT,
    )
    tokens = tiny_batch(tokenizer)

    def gradients(**options):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(backbone(**tokens, training=True, **options).pooler_output ** 2)
        return tape.gradient(loss, backbone.trainable_variables)

    full, cls = gradients(), gradients(cls_only=True)
    assert len(full) == len(cls) == len(backbone.trainable_variables)
    for variable, expected, got in zip(backbone.trainable_variables, full, cls):
        np.testing.assert_allclose(
            tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(expected).numpy(), atol=1e-5, err_msg=variable.name
        )


def test_cls_only_refuses_outputs_it_cannot_give(tiny_backbone, tokenizer):
    with pytest.raises(ValueError, match=r"cls_only .* \['output_hidden_states'\]"):
        tiny_backbone(**tiny_batch(tokenizer), cls_only=True, output_hidden_states=True)
    with pytest.raises(ValueError, match=r"cls_only .* \['output_hidden_states'\]"):  # not a silent drop
        encoder_features(tiny_backbone, tiny_batch(tokenizer), hidden_states=True, cls_only=True)
    # Without cls_only every TFBertModel argument still means what it did, positions included.
    tokens = tiny_batch(tokenizer)
    positional = tiny_backbone(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"], None, output_hidden_states=True)
    assert len(positional.hidden_states) == TINY_CONFIG["num_hidden_layers"] + 1


def test_cls_only_under_mixed_bfloat16(tokenizer):
    import tf_keras

    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")  # reset by conftest
    tf_keras.utils.set_random_seed(0)
    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)
    tokens = tiny_batch(tokenizer)
    backbone(**tokens)  # builds the weights sharpen scales
    sharpen(backbone)
    full, cls = backbone(**tokens), backbone(**tokens, cls_only=True)
    assert cls.pooler_output.dtype == tf.bfloat16
    full, cls = (tf.cast(output.pooler_output, tf.float32).numpy() for output in (full, cls))
    spread = np.abs(full - full.mean(axis=0)).max()  # how much the sentences' pooled vectors differ
    assert spread > 0.3
    np.testing.assert_allclose(cls, full, atol=0.05 * spread)
