"""The classifier: token ids -> backbone -> head -> logits, as one tf_keras model."""

import tensorflow as tf
import tf_keras

from tfbert.heads import ClassificationHead

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def encoder_features(backbone: tf_keras.Model, tokens: dict, hidden_states: bool = False, cls_only: bool = False) -> dict:
    """The encoder outputs a head reads, for int32 (batch, seq) `tokens` (see tfbert.heads).

    `hidden_states` asks the encoder for every layer's output too, stacked to
    (batch, layers + 1, seq, hidden); heads that do not read them do not pay for them.
    `cls_only` (a tfbert.backbone.BertBackbone, for heads whose `reads_cls_only`): the top
    layer runs for [CLS] alone, so last_hidden_state and attention_mask hold position 0 only.
    """
    # A BertBackbone refuses cls_only with hidden_states: it has no top layer for every position.
    options = {"cls_only": True} if cls_only else {}
    encoded = backbone(**tokens, output_hidden_states=hidden_states, **options)
    features = {
        "last_hidden_state": encoded.last_hidden_state,  # (batch, seq, hidden); (batch, 1, hidden) with cls_only
        "pooler_output": encoded.pooler_output,  # (batch, hidden)
        "attention_mask": tokens["attention_mask"][:, :1] if cls_only else tokens["attention_mask"],  # (batch, seq)
    }
    if hidden_states:
        # layers + 1 tensors of (batch, seq, hidden): the embeddings, then each layer.
        features["hidden_states"] = tf.stack(encoded.hidden_states, axis=1)  # (batch, layers + 1, seq, hidden)
    return features


def in_slices(function, slices: int, inputs):
    """`function(inputs)` computed on `slices` slices of the batch (the rows of every input
    tensor), independent subgraphs that TensorFlow can run side by side; their outputs
    (any nest of batch-first tensors) joined row-wise."""
    if slices == 1:
        return function(inputs)
    rows = tf.shape(tf.nest.flatten(inputs)[0])[0]
    bounds = [rows * i // slices for i in range(slices + 1)]
    outputs = [
        function(tf.nest.map_structure(lambda tensor: tensor[start:end], inputs))
        for start, end in zip(bounds, bounds[1:])
    ]
    return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *outputs)


@tf_keras.saving.register_keras_serializable(package="tfbert")
class Classifier(tf_keras.Model):
    """A functional tf_keras.Model whose steps can run a batch in slices and accumulate gradients.

    With `parallel_slices = k > 1` the training, evaluation and prediction steps run
    each batch as k slices of its rows, independent subgraphs that TensorFlow runs side
    by side on its inter-op threads, and join their logits: the loss, its gradient and
    the metrics are those of the whole batch. With one thread per op (Trainer sets it),
    two slices on a 2-core CPU keep both cores on matmuls of half the size, which one
    core multiplies faster than two cores share one.

    With `grad_accum_steps = n > 1` each batch's gradients, weighted by its rows, are
    summed into accumulators and their mean per row is applied once every n batches, so
    n batches train like the one batch of all their rows, whatever each one's size (the
    optimizer, and with it the learning-rate schedule, counts applied steps). With
    `accumulation_end`, the number of batches the whole run trains on, a last group of
    fewer than n batches is applied at the end too. Set these before `compile`.
    """

    parallel_slices = 1
    grad_accum_steps = 1
    accumulation_end = None

    def sliced_call(self, features, training: bool):
        """The logits of `features`, computed as `parallel_slices` slices of the batch."""
        return in_slices(lambda rows: self(rows, training=training), self.parallel_slices, features)

    def train_step(self, data):
        features, labels, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            outputs = self.sliced_call(features, training=True)
            loss = self.compute_loss(features, labels, outputs, sample_weight)
        self._validate_target_and_loss(labels, loss)
        if self.grad_accum_steps == 1:
            self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        else:
            self._accumulate(tape, loss, rows=tf.shape(tf.nest.flatten(features)[0])[0])
        return self.compute_metrics(features, labels, outputs, sample_weight)

    def test_step(self, data):
        features, labels, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        outputs = self.sliced_call(features, training=False)
        self.compute_loss(features, labels, outputs, sample_weight)
        return self.compute_metrics(features, labels, outputs, sample_weight)

    def predict_step(self, data):
        features, _, _ = tf_keras.utils.unpack_x_y_sample_weight(data)
        return self.sliced_call(features, training=False)

    def _accumulate(self, tape: tf.GradientTape, loss: tf.Tensor, rows: tf.Tensor) -> None:
        """Add the gradients of `loss` (a mean over the batch's `rows`), times `rows`, to the
        accumulators; apply their mean per row every grad_accum_steps batches and at
        accumulation_end.

        Under a tf.distribute strategy each replica keeps its own accumulators (variables
        synchronized on read: their sum over the replicas is read across them), and the
        optimizer's all-reduce runs only in the batches that apply. Where the replicas
        synchronize through merge_calls (the optimizer's among them), which cannot sit inside
        a condition that each replica takes on its own, whether a batch applies is decided
        across the replicas (in a merge_call of its own).
        """
        if not hasattr(self, "_accumulated"):
            per_replica = dict(
                trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
            with tf.init_scope():
                self._accumulated = [
                    tf.Variable(tf.zeros_like(variable), name="accumulated_gradient", **per_replica)
                    for variable in self.trainable_variables
                ]
                self._accumulated_rows = tf.Variable(0.0, name="accumulated_rows", **per_replica)
                self._micro_steps = tf.Variable(
                    0, dtype=tf.int64, trainable=False, name="micro_steps",
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )
        # The optimizer's own gradients: a LossScaleOptimizer (mixed_float16) scales the loss
        # on the tape and unscales the gradients, as its minimize does.
        gradients = [gradient for gradient, _ in self.optimizer.compute_gradients(loss, self.trainable_variables, tape)]
        # Keras divides each replica's mean loss by the number of replicas: undone here, so the
        # accumulators hold the sum of this replica's examples' gradients.
        rows = tf.cast(rows, tf.float32)
        scale = rows * tf.distribute.get_strategy().num_replicas_in_sync
        for accumulator, gradient in zip(self._accumulated, gradients):
            if gradient is not None:
                accumulator.assign_add(tf.convert_to_tensor(gradient) * scale)
        self._accumulated_rows.assign_add(rows)
        self._micro_steps.assign_add(1)
        # A variable the loss does not reach gets no update, as in a step without accumulation
        # (a zero gradient would still move Adam's moments and decay it).
        reached = [gradient is not None for gradient in gradients]
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            # One device, or XLA over GPUs, where the replicas all-reduce without a merge_call
            # (and may not make one): each replica takes the condition, the same on all of them.
            self._apply_if_due(reached)
        else:
            tf.distribute.get_replica_context().merge_call(lambda strategy: self._apply_if_due(reached, strategy))

    def _apply_if_due(self, reached: list[bool], strategy: tf.distribute.Strategy | None = None) -> None:
        """When grad_accum_steps batches have accumulated, or the run's last one has: every
        replica applies its accumulated gradients (the optimizer sums them over the replicas)
        divided by all replicas' rows, then zeroes them. Called in replica context, or in
        cross-replica context with the `strategy`, which then runs each replica's apply."""

        def apply_in_replica(all_rows):
            self.optimizer.apply_gradients(
                (accumulator.read_value() / all_rows, variable)
                for accumulator, variable, used in zip(self._accumulated, self.trainable_variables, reached)
                if used
            )
            for accumulator in self._accumulated:
                accumulator.assign(tf.zeros_like(accumulator))
            self._accumulated_rows.assign(0.0)

        def apply():
            if strategy is None:
                replica = tf.distribute.get_replica_context()
                apply_in_replica(replica.all_reduce(tf.distribute.ReduceOp.SUM, self._accumulated_rows.read_value()))
            else:  # read across the replicas, the variable gives their sum
                strategy.extended.call_for_each_replica(apply_in_replica, args=(self._accumulated_rows.read_value(),))
            return tf.constant(True)

        due = self._micro_steps % self.grad_accum_steps == 0
        if self.accumulation_end is not None:
            due = due | (self._micro_steps == self.accumulation_end)
        tf.cond(due, apply, lambda: tf.constant(False))


def classifier_parts(model: tf_keras.Model) -> tuple[tf_keras.Model, ClassificationHead]:
    """The (backbone, head) layers of a model that build_classifier made."""
    backbone = [layer for layer in model.layers if hasattr(layer, "bert")]
    head = [layer for layer in model.layers if isinstance(layer, ClassificationHead)]
    if len(backbone) != 1 or len(head) != 1:
        raise ValueError(f"{model.name} is not a tfbert classifier: it needs one BERT backbone and one head")
    return backbone[0], head[0]


def build_classifier(backbone: tf_keras.Model, head: ClassificationHead) -> tf_keras.Model:
    """A functional model: dict of int32 (batch, seq) token tensors -> (batch, classes) logits."""
    inputs = {
        name: tf_keras.Input(shape=(None,), dtype=tf.int32, name=name) for name in INPUT_NAMES
    }
    # A head that never reads pooler_output would leave the pooler without gradients.
    backbone.bert.pooler.trainable = "pooler_output" in head.reads
    # A head that reads [CLS] only trains and predicts without the top layer's other positions.
    features = encoder_features(
        backbone, inputs, hidden_states="hidden_states" in head.reads, cls_only=head.reads_cls_only
    )
    logits = head(features)
    return Classifier(inputs, logits, name=f"bert_{head.name}")
