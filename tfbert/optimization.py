"""AdamW with linear warmup and linear decay to zero, as BERT was fine-tuned; optionally
with layer-wise learning-rate decay (lower encoder layers learn more slowly)."""

import math
import re
from contextlib import contextmanager

import tensorflow as tf
import tf_keras
from transformers.optimization_tf import WarmUp

from tfbert.checks import check_flags, is_number

# LayerNorm scales/offsets and biases are not decayed (as in BERT).
NO_WEIGHT_DECAY = ["LayerNorm", "layer_norm", "bias"]
# Where TFBertModel keeps its variables: `.../bert/embeddings/...`, `.../bert/encoder/layer_._3/...`.
EMBEDDINGS = re.compile(r"/embeddings/")
ENCODER_LAYER = re.compile(r"/encoder/layer_\._(\d+)/")
# What create_adamw accepts for its numeric settings: a test, and how an error message says it.
VALID_SETTINGS = {
    "learning_rate": (lambda value: value > 0, "a number above 0"),
    "weight_decay": (lambda value: value >= 0, "a number, 0 or more"),
    "beta_1": (lambda value: 0 <= value < 1, "a number in [0, 1)"),
    "beta_2": (lambda value: 0 <= value < 1, "a number in [0, 1)"),
    "epsilon": (lambda value: value > 0, "a number above 0"),
    "global_clipnorm": (lambda value: value > 0, "a number above 0 (or null: no clipping)"),
}


def create_adamw(
    num_train_steps: int,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    global_clipnorm: float | None = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-6,
    layer_decay: float | None = None,
    num_layers: int | None = None,
    lazy_embeddings: bool = False,
) -> tf_keras.optimizers.AdamW:
    """AdamW whose learning rate rises linearly for `warmup_ratio` of the steps, then falls to 0.

    Args:
        num_train_steps: optimizer steps of the whole run (known once data is batched).
        learning_rate: peak learning rate, reached at the end of warmup.
        weight_decay: decoupled weight decay, not applied to LayerNorm and biases.
        warmup_ratio: fraction of the steps spent warming up.
        global_clipnorm: clip gradients to this global norm (None: no clipping).
        layer_decay: in (0, 1]: layer-wise learning-rate decay (see LayerDecayAdamW);
            None: every variable learns at the same rate.
        num_layers: the encoder's number of layers; needed with `layer_decay`.
        lazy_embeddings: update only the embedding rows each batch uses (see FusedAdamW);
            False: every row, every step, as plain AdamW.
    """
    check_flags(lazy_embeddings=lazy_embeddings)
    schedule = warmup_linear_decay(_checked("learning_rate", learning_rate), num_train_steps, warmup_ratio)
    settings = dict(
        learning_rate=schedule,
        weight_decay=_checked("weight_decay", weight_decay),
        beta_1=_checked("beta_1", beta_1),
        beta_2=_checked("beta_2", beta_2),
        epsilon=_checked("epsilon", epsilon),
        global_clipnorm=None if global_clipnorm is None else _checked("global_clipnorm", global_clipnorm),
        lazy_embeddings=lazy_embeddings,
    )
    if layer_decay is None:
        optimizer = FusedAdamW(**settings)
    else:
        optimizer = LayerDecayAdamW(layer_decay=layer_decay, num_layers=num_layers, **settings)
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


def _checked(name: str, value) -> float:
    """`value` of the setting `name` as a float (a config may give an int), if VALID_SETTINGS allows it."""
    valid, allowed = VALID_SETTINGS[name]
    if not is_number(value) or not valid(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


@tf_keras.saving.register_keras_serializable(package="tfbert")
class FusedAdamW(tf_keras.optimizers.AdamW):
    """tf_keras AdamW whose Adam step is TensorFlow's fused kernel, and lazy on embeddings.

    A dense gradient gets the same update as tf_keras.optimizers.AdamW (the same moments,
    bias correction, epsilon placement and decoupled weight decay), but through the fused
    ResourceApplyAdam kernel: one multithreaded pass over the variable and its moments
    instead of about ten elementwise ops, each writing a temporary as big as the variable.

    A sparse gradient (an embedding lookup's: the rows a batch used) gets, with
    `lazy_embeddings`, a lazy update: only those rows' moments, weight decay and Adam
    step. The 11.7M-weight word embeddings of a 30k vocabulary then cost a few hundred
    rows per step instead of three full passes; rows a batch does not use stay as they
    are, where AdamW would keep moving them on their old momentum. Without it, the
    gradient is made dense and AdamW updates every row. bench/results/HISTORY.md has the
    effect of both. `amsgrad` keeps Keras' step.

    Args:
        lazy_embeddings: update only the rows a sparse gradient touches.
        (others as tf_keras.optimizers.AdamW)
    """

    def __init__(self, lazy_embeddings: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.lazy_embeddings = lazy_embeddings
        self._lazy_keys = set()  # the variables whose gradients in this apply are sparse

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        self._lazy_keys = {
            self._var_key(variable) for gradient, variable in grads_and_vars
            if self.lazy_embeddings and isinstance(gradient, tf.IndexedSlices)
        }
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def _clip_gradients(self, grads):
        """Keras' clipping, on gradients whose repeated rows are summed first: an embedding
        lookup's sparse gradient holds a row per lookup, and the global norm of those rows
        is not the gradient's (four lookups of one row: half its norm), so clipping let
        too large a step through and changed when a batch came in slices or accumulated."""
        return super()._clip_gradients(super()._deduplicate_sparse_grad(list(grads)))

    def _deduplicate_sparse_grad(self, grads):
        return grads  # Keras calls this right after _clip_gradients, which has summed the rows

    def _apply_weight_decay(self, variables):
        """Keras' decoupled weight decay, before the Adam steps, in one pass per variable.

        Keras computes `variable * wd * lr` (two multiplications, each writing a temporary
        as big as the variable) and subtracts it; `shrink`, compiled by XLA, reads and writes
        the variable once. A lazily updated variable decays in _lazy_update instead.
        """
        if self.weight_decay is None:
            return
        variables = [
            v for v in variables if self._var_key(v) not in self._lazy_keys and self._use_weight_decay(v)
        ]

        def decay(variable):
            dtype = variable.dtype
            shrink(variable, tf.cast(self.learning_rate, dtype) * tf.cast(self.weight_decay, dtype))

        def decay_each(distribution, variables):
            for variable in variables:
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(decay_each, self._distribution_strategy, variables)

    def update_step(self, gradient, variable):
        if self.amsgrad:
            return super().update_step(gradient, variable)
        if self._var_key(variable) in self._lazy_keys:
            return self._lazy_update(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(self.learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            # Keras' sparse path would scatter into the moments, after which TensorFlow
            # copies them whole on every dense read: a dense gradient is cheaper.
            grad=tf.convert_to_tensor(gradient),
        )

    def _lazy_update(self, gradient: tf.IndexedSlices, variable):
        """AdamW on the rows of `gradient` (unique: apply_gradients sums duplicates first)."""
        if not isinstance(gradient, tf.IndexedSlices):  # made dense on the way (a gradient all-reduce)
            gradient = tf.IndexedSlices(gradient, tf.range(tf.shape(gradient, out_type=tf.int64)[0]))
        rows, values = gradient.indices, gradient.values
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        momentum, velocity = self._momentums[index], self._velocities[index]
        m = beta_1 * tf.gather(momentum, rows) + (1 - beta_1) * values
        v = beta_2 * tf.gather(velocity, rows) + (1 - beta_2) * tf.square(values)
        momentum.scatter_update(tf.IndexedSlices(m, rows))
        velocity.scatter_update(tf.IndexedSlices(v, rows))
        if self.weight_decay is not None and self._use_weight_decay(variable):
            rate = tf.cast(self.learning_rate, dtype) * tf.cast(self.weight_decay, dtype)
            variable.scatter_sub(tf.IndexedSlices(tf.gather(variable, rows) * rate, rows))
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        return variable.scatter_sub(tf.IndexedSlices(alpha * m / (tf.sqrt(v) + tf.cast(self.epsilon, dtype)), rows))

    def get_config(self) -> dict:
        return {**super().get_config(), "lazy_embeddings": self.lazy_embeddings}


@tf_keras.saving.register_keras_serializable(package="tfbert")
class LayerDecayAdamW(FusedAdamW):
    """AdamW whose learning rate shrinks by `layer_decay` per layer down a BERT encoder.

    Encoder layer i of L (variables under `.../encoder/layer_._{i}/`, i = 0 at the bottom)
    learns at lr * layer_decay ** (L - i), the embeddings at lr * layer_decay ** (L + 1),
    everything else (pooler, head) at lr.

    Adam's step does not change when a gradient is scaled, so the factor scales the
    learning rate itself: AdamW reads `learning_rate` once per variable, for its Adam
    step and for its weight decay, and while it updates a variable that read returns the
    variable's own rate. Read anywhere else (schedules, logs), it is the base rate.

    Args:
        layer_decay: the factor per layer, in (0, 1]; 1 is plain AdamW.
        num_layers: the encoder's number of layers, L.
        (others as tf_keras.optimizers.AdamW)
    """

    def __init__(self, layer_decay: float, num_layers: int, **kwargs):
        if not is_number(layer_decay) or not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be a number in (0, 1] (or null for none), got {layer_decay!r}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"layer_decay needs num_layers, the encoder's number of layers (a positive "
                f"integer), got {num_layers!r}"
            )
        super().__init__(**kwargs)
        self.layer_decay = layer_decay
        self.num_layers = num_layers
        self._variable_scale = None  # the scale of the variable being updated, if any

    def learning_rate_scale(self, variable) -> float:
        """The factor on the base learning rate for `variable`, from its name."""
        if EMBEDDINGS.search(variable.name):
            return self.layer_decay ** (self.num_layers + 1)
        layer = ENCODER_LAYER.search(variable.name)
        if layer is None:
            return 1.0
        index = int(layer[1])
        if index >= self.num_layers:
            raise ValueError(
                f"{variable.name} is in encoder layer {index}, but num_layers={self.num_layers}; "
                "pass the encoder's number of layers (config.num_hidden_layers)"
            )
        return self.layer_decay ** (self.num_layers - index)

    @property
    def learning_rate(self):
        rate = super().learning_rate
        return rate if self._variable_scale is None else rate * self._variable_scale

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        FusedAdamW.learning_rate.fset(self, learning_rate)

    @contextmanager
    def _learning_rate_of(self, variable):
        self._variable_scale = self.learning_rate_scale(variable)
        try:
            yield
        finally:
            self._variable_scale = None

    def update_step(self, gradient, variable):
        with self._learning_rate_of(variable):
            super().update_step(gradient, variable)

    def _apply_weight_decay(self, variables):
        for variable in variables:
            with self._learning_rate_of(variable):
                super()._apply_weight_decay([variable])

    def get_config(self) -> dict:
        return {**super().get_config(), "layer_decay": self.layer_decay, "num_layers": self.num_layers}


@tf.function(jit_compile=True)
def shrink(variable: tf.Variable, rate: tf.Tensor):
    """variable -= variable * rate, fused into one pass."""
    variable.assign_sub(variable * rate)


def warmup_linear_decay(
    learning_rate: float, num_train_steps: int, warmup_ratio: float
) -> tf_keras.optimizers.schedules.LearningRateSchedule:
    """0 -> learning_rate over the first warmup_ratio of the steps, then linearly -> 0."""
    if num_train_steps < 1:
        raise ValueError(f"num_train_steps must be positive, got {num_train_steps}")
    if not is_number(warmup_ratio) or not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be a number in [0, 1), got {warmup_ratio!r}")
    # The whole steps in that share; rounded first, as 0.29 * 100 computes 28.999...
    warmup_steps = math.floor(round(warmup_ratio * num_train_steps, 6))
    decay = tf_keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps=num_train_steps - warmup_steps, end_learning_rate=0.0
    )
    return WarmUp(learning_rate, decay, warmup_steps) if warmup_steps else decay
