"""The encoder: a transformers TFBertModel from a local dir, a package, the hub or a config.

Where a model lives (`name_or_path`): see tfbert.model_dir.

Weights are read from TensorFlow's `tf_model.h5` or, without torch, from PyTorch's
`model.safetensors` (transformers 4.57 itself cannot: upstream issue 40028).

The model is a `BertBackbone`: a TFBertModel that can also run its top layer for [CLS]
alone (`cls_only=True`), for heads that read nothing else.
"""

import inspect
import math
from pathlib import Path

import tensorflow as tf
from safetensors.numpy import load_file
from transformers import BertConfig, TFBertModel
from transformers.modeling_tf_outputs import TFBaseModelOutputWithPoolingAndCrossAttentions
from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

from tfbert.checks import check_flags, is_whole_number
from tfbert.dropout import use_fast_dropout
from tfbert.gelu import use_float32_gelu
from tfbert.layer_norm import use_fast_layer_norm
from tfbert.model_dir import BackboneNotFound, resolve_model_dir

FREEZE_CHOICES = ("none", "embeddings", "all")


class BertBackbone(TFBertModel):
    """TFBertModel that can skip what a head reading only [CLS] never sees.

    Called with `cls_only=True`, the top encoder layer computes its keys and values for
    every token but its query, attention output and feed-forward layers for position 0
    ([CLS]) alone: the other positions of the top layer feed nothing that pooler_output
    or last_hidden_state[:, 0] read. For MiniLM that is 14% of the encoder's dense-layer
    work, forward and backward. The outputs (and so the gradients) equal TFBertModel's,
    with last_hidden_state (batch, 1, hidden). Without it, the call is TFBertModel's.
    """

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, *args, cls_only=False, training=False, **kwargs):
        if not cls_only:
            return super().call(input_ids, attention_mask, token_type_ids, *args, training=training, **kwargs)
        asked = sorted(name for name, value in kwargs.items() if value is not None and value is not False)
        if args or asked:
            raise ValueError(
                "cls_only takes input_ids, attention_mask and token_type_ids and computes the top "
                f"layer for [CLS] alone; it cannot also take or give {asked or 'more positional arguments'}"
            )
        bert = self.bert
        hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, training=training)  # (batch, seq, hidden)
        if attention_mask is None:
            attention_mask = tf.ones(tf.shape(hidden)[:2], tf.int32)
        # BERT's additive mask, as TFBertMainLayer makes it: 0 for real keys, -10000 for padding.
        key_bias = (1.0 - tf.cast(attention_mask, hidden.dtype)[:, tf.newaxis, tf.newaxis, :]) * -10000.0  # (batch, 1, 1, seq)
        *lower, top = bert.encoder.layer
        for layer in lower:
            hidden = layer(
                hidden_states=hidden, attention_mask=key_bias, head_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, past_key_value=None, output_attentions=False, training=training,
            )[0]
        cls = _cls_layer(top, hidden, key_bias, training)  # (batch, 1, hidden)
        return TFBaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=cls, pooler_output=bert.pooler(cls))


def _cls_layer(layer, hidden: tf.Tensor, key_bias: tf.Tensor, training) -> tf.Tensor:
    """A TFBertLayer's output at position 0 only: (batch, 1, hidden) from (batch, seq, hidden)."""
    attention = layer.attention.self_attention
    batch = tf.shape(hidden)[0]
    cls = hidden[:, :1]  # (batch, 1, hidden)
    query = attention.transpose_for_scores(attention.query(cls), batch)  # (batch, heads, 1, size)
    key = attention.transpose_for_scores(attention.key(hidden), batch)  # (batch, heads, seq, size)
    value = attention.transpose_for_scores(attention.value(hidden), batch)
    scores = tf.matmul(query, key, transpose_b=True) / math.sqrt(attention.attention_head_size) + key_bias
    probabilities = attention.dropout(tf.nn.softmax(scores, axis=-1), training=training)  # (batch, heads, 1, seq)
    context = tf.transpose(tf.matmul(probabilities, value), [0, 2, 1, 3])  # (batch, 1, heads, size)
    context = tf.reshape(context, [batch, 1, attention.all_head_size])
    attended = layer.attention.dense_output(hidden_states=context, input_tensor=cls, training=training)
    return layer.bert_output(
        hidden_states=layer.intermediate(hidden_states=attended), input_tensor=attended, training=training
    )


def load_backbone(
    name_or_path: str,
    random_init: bool = False,
    config_overrides: dict | None = None,
    freeze: str = "none",
    trainable_layers: int | None = None,
) -> BertBackbone:
    """A built TFBertModel with pretrained (or, with `random_init`, fresh) weights.

    Its GELU is tfbert.gelu's (the same function, a cheaper gradient) and its dropout
    tfbert.dropout's (the same rates to 1/65536, half the random bits).

    Args:
        name_or_path: local directory, package name or hub id (see module doc).
        random_init: ignore the weights and initialise at random (tests, ablations).
        config_overrides: BertConfig fields to change, e.g. a tiny
            `{hidden_size: 32, num_hidden_layers: 2}` with `random_init`.
        freeze: what does not train: `none`, `embeddings`, or `all` (the whole encoder,
            pooler included; only the head trains).
        trainable_layers: train only the top N encoder layers (and the pooler); the
            embeddings and the layers below stay frozen. None: every layer trains.
    """
    check_flags(random_init=random_init)
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}; got {freeze!r}")
    if freeze == "all" and trainable_layers is not None:
        raise ValueError(
            f"freeze='all' freezes every layer, so trainable_layers={trainable_layers} cannot "
            "train any; set one of them only"
        )
    model_dir = resolve_model_dir(name_or_path, weights=not random_init)
    overrides = dict(config_overrides or {})
    config, unknown = BertConfig.from_pretrained(model_dir, return_unused_kwargs=True, **overrides)
    if unknown:  # transformers would drop them silently: a misspelt dropout would change nothing
        fields = [name for name in inspect.signature(BertConfig.__init__).parameters if name not in ("self", "kwargs")]
        raise ValueError(
            f"config_overrides {sorted(unknown)} are not BertConfig fields; its own fields: {', '.join(fields)}"
        )
    if trainable_layers is not None and not is_whole_number(trainable_layers, 0, config.num_hidden_layers):
        raise ValueError(
            f"trainable_layers must be a whole number from 0 to the encoder's {config.num_hidden_layers} "
            f"layers (or null for all), got {trainable_layers!r}"
        )
    model = _load_weights(name_or_path, model_dir, config, random_init)
    use_float32_gelu(model)
    use_fast_dropout(model)
    use_fast_layer_norm(model)
    _freeze(model, freeze, trainable_layers)
    return model


def check_max_length(max_length: int, backbone: TFBertModel) -> None:
    """ValueError unless sequences of `max_length` tokens fit the encoder's position embeddings
    (a longer one would fail inside a training step, at the first batch that long)."""
    positions = backbone.config.max_position_embeddings
    if max_length > positions:
        raise ValueError(
            f"task.max_length={max_length} is longer than this encoder takes: it has {positions} "
            f"position embeddings; set task.max_length to {positions} or less"
        )


def _freeze(model: TFBertModel, freeze: str, trainable_layers: int | None) -> None:
    """Mark what does not train as non-trainable (see load_backbone)."""
    if freeze == "all":
        model.trainable = False
    if freeze == "embeddings" or trainable_layers is not None:
        model.bert.embeddings.trainable = False
    if trainable_layers is not None:
        frozen = len(model.bert.encoder.layer) - trainable_layers
        for layer in model.bert.encoder.layer[:frozen]:
            layer.trainable = False


def _load_weights(name_or_path: str, model_dir: Path, config: BertConfig, random_init: bool) -> BertBackbone:
    """A built TFBertModel of `config`, with model_dir's weights unless `random_init`."""
    if random_init:
        model = BertBackbone(config)
        model.build_in_name_scope()
        return model
    if (model_dir / "tf_model.h5").is_file():
        return BertBackbone.from_pretrained(model_dir, config=config)
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise BackboneNotFound(
            f"model {name_or_path!r} ({model_dir}) has neither tf_model.h5 nor "
            "model.safetensors; convert its weights to one of them"
        )
    model = BertBackbone(config)
    _, info = load_pytorch_state_dict_in_tf2_model(
        model, load_file(str(weights)), allow_missing_keys=True, output_loading_info=True,
        skip_logger_warnings=True,
    )
    missing = [key for key in info["missing_keys"] if "pooler" not in key]
    if missing or info["mismatched_keys"]:
        raise BackboneNotFound(
            f"{weights} does not fit a BERT of this config: missing {missing[:5]}, "
            f"mismatched {[key for key, *_ in info['mismatched_keys']][:5]}"
        )
    if info["missing_keys"]:
        tf.get_logger().warning(f"{weights} has no pooler weights; the pooler starts random")
    return model
