"""BERT on real tokens only, for serving: no compute spent on padding.

A request of sentences of different lengths, padded to its longest, spends most of
its matrix multiplications on padding (on the sentiment corpus a batch of 32 is about
half padding). Here the encoder's per-token work (embeddings, the query/key/value,
output and feed-forward dense layers, layer norms) runs on the batch's real tokens
packed end to end, (1, tokens, hidden); only attention, which mixes the tokens of one
sentence, sees a padded (batch, heads, seq, seq) view. For a head that reads only
[CLS] (`cls_only`), the top layer's queries, output and feed-forward layers run for
the [CLS] tokens alone: the other positions of the top layer feed nothing it reads.
The layers and weights are the TFBertModel's own, called in inference mode, so the
outputs equal the padded model's up to float rounding.

With `shards` > 1 the packed tokens are cut into that many consecutive runs, and each
layer's per-token work runs once per run: independent branches of the graph that meet
only where attention needs every token's key and value. TensorFlow runs independent ops
at once on its inter-op threads, so with one thread per op (intra-op parallelism 1) each
core takes a branch. That beats splitting every op over the cores when the ops are small:
for one 25-token sentence an op's own matrix is too small for its threads to keep up
(bench/results/serving.md has both). With `query_key_value` (fused_query_key_value), each
run's query, key and value projections are one matrix multiplication.
"""

import tensorflow as tf
import tf_keras


def packed_encoder_features(
    backbone: tf_keras.Model,
    input_ids: tf.RaggedTensor,
    token_type_ids: tf.RaggedTensor,
    hidden_states: bool = False,
    cls_only: bool = False,
    shards: int = 1,
    query_key_value: list | None = None,
) -> dict:
    """The dict a head reads (see tfbert.heads), for ragged int32 (batch, None) token rows.

    `backbone` is a TFBertModel; padded outputs are zero beyond each row's length.
    `hidden_states` adds every layer's output, (batch, layers + 1, seq, hidden).
    `cls_only` (not with hidden_states): last_hidden_state is (batch, 1, hidden), the
    [CLS] vectors only, and attention_mask (batch, 1); pooler_output is unchanged.
    `shards`: independent branches of the per-token work (see the module docstring).
    `query_key_value`: per layer, (kernel, bias) of its query, key and value projections
        side by side, (hidden, 3 * hidden) and (3 * hidden,) (see fused_query_key_value):
        one matrix multiplication per run instead of three. None: put side by side on
        every call (a copy of those weights per call).
    """
    if cls_only and hidden_states:
        raise ValueError("cls_only computes the top layer for [CLS] only, so it cannot return hidden_states")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive integer (independent branches of the encoder), got {shards!r}")
    bert = backbone.bert
    if query_key_value is None:  # side by side on every call; fused_query_key_value does it once
        query_key_value = [side_by_side(layer.attention.self_attention) for layer in bert.encoder.layer]
    row_lengths = input_ids.row_lengths()
    positions = tf.ragged.range(row_lengths).flat_values  # (tokens,)
    tokens = bert.embeddings(
        input_ids=input_ids.flat_values[tf.newaxis],
        position_ids=positions[tf.newaxis],
        token_type_ids=token_type_ids.flat_values[tf.newaxis],
        training=False,
    )[0]  # (tokens, hidden)
    seq = tf.maximum(tf.reduce_max(row_lengths), 1)  # an empty batch still has a [CLS] column
    real = tf.sequence_mask(row_lengths, seq)  # (batch, seq)
    # BERT's additive mask: 0 for real keys, -10000 for padding.
    key_bias = (1.0 - tf.cast(real, tokens.dtype))[:, tf.newaxis, tf.newaxis, :] * -10000.0  # (batch, 1, 1, seq)
    # Where each padded slot's token sits in the packed rows; padding points one past the end.
    slot = input_ids.row_starts()[:, tf.newaxis] + tf.range(seq, dtype=tf.int64)  # (batch, seq)
    slot = tf.where(real, slot, tf.size(input_ids.flat_values, out_type=tf.int64))
    real_slots = tf.where(tf.reshape(real, [-1]))[:, 0]  # (tokens,) in packed order

    def padded(packed: tf.Tensor) -> tf.Tensor:
        """(tokens, width) -> (batch, seq, width), zeros after each row's end."""
        return tf.gather(tf.pad(packed, [[0, 1], [0, 0]]), slot)

    def add_and_norm(norm: tf_keras.layers.Layer, update: tf.Tensor, residual: tf.Tensor) -> tf.Tensor:
        """BERT's residual connection and layer norm on (tokens, hidden); its norms are built for rank 3."""
        return norm((update + residual)[tf.newaxis])[0]

    layers = bert.encoder.layer
    heads = layers[0].attention.self_attention.num_attention_heads
    head_size = layers[0].attention.self_attention.attention_head_size

    def split_heads(rows: tf.Tensor, parts: int) -> list[tf.Tensor]:
        """(batch, positions, parts * hidden) -> `parts` x (batch, heads, positions, head_size); one transpose."""
        shape = tf.shape(rows)
        rows = tf.reshape(rows, [shape[0], shape[1], parts, heads, head_size])
        return tf.unstack(tf.transpose(rows, [2, 0, 3, 1, 4]), parts)

    total = tf.size(input_ids.flat_values)
    bounds = [total * part // shards for part in range(shards + 1)]  # the same runs in every layer

    def split_rows(packed: tf.Tensor) -> list[tf.Tensor]:
        """(tokens, width) -> `shards` consecutive runs of (about tokens / shards, width)."""
        if shards == 1:
            return [packed]
        return [packed[start:end] for start, end in zip(bounds, bounds[1:])]

    # The dense layers see rank-2 inputs, (tokens, width): one MatMul each, where a rank-3
    # input would add the reshapes and shape arithmetic of a tensordot.
    parts = split_rows(tokens)  # this layer's input, run by run
    layer_outputs = [tokens]
    for index, layer in enumerate(layers):
        attention = layer.attention.self_attention
        top_cls_only = cls_only and index == len(layers) - 1
        if top_cls_only:  # queries, and so outputs, for each row's [CLS] only
            queries = tf.gather(tokens, input_ids.row_starts())  # (batch, hidden)
            (query,) = split_heads(attention.query(queries)[:, tf.newaxis], 1)  # (batch, heads, 1, size)

            def project(part):  # (run, hidden) -> (run, 2 * hidden): keys, values
                return tf.concat([attention.key(part), attention.value(part)], -1)
        else:
            kernel, bias = query_key_value[index]

            def project(part):  # (run, hidden) -> (run, 3 * hidden): queries, keys, values
                return tf.nn.bias_add(tf.matmul(part, kernel), bias)

        # Every run's projections, back in packed order, then per sentence and head.
        projected = split_heads(padded(tf.concat([project(part) for part in parts], 0)), 2 if top_cls_only else 3)
        key, value = projected[-2:]
        if not top_cls_only:
            query = projected[0]
        scores = tf.matmul(query, key, transpose_b=True) / tf.cast(attention.sqrt_att_head_size, tokens.dtype)
        probabilities = tf.nn.softmax(scores + key_bias, axis=-1)  # (batch, heads, queries, seq)
        context = tf.transpose(tf.matmul(probabilities, value), [0, 2, 1, 3])  # (batch, queries, heads, size)
        context = tf.reshape(context, [-1, heads * head_size])  # (batch * queries, hidden)
        if top_cls_only:  # (batch, hidden): one small run
            contexts, residuals = [context], [queries]
        else:  # (tokens, hidden), cut where this layer's input was
            contexts, residuals = split_rows(tf.gather(context, real_slots)), parts
        parts = []
        for context, residual in zip(contexts, residuals):
            # TFBertSelfOutput, TFBertIntermediate and TFBertOutput in inference mode (no dropout).
            attended = add_and_norm(layer.attention.dense_output.LayerNorm, layer.attention.dense_output.dense(context), residual)
            intermediate = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(attended))
            parts.append(add_and_norm(layer.bert_output.LayerNorm, layer.bert_output.dense(intermediate), attended))
        tokens = tf.concat(parts, 0) if len(parts) > 1 else parts[0]
        layer_outputs.append(tokens)

    last_hidden_state = tokens[:, tf.newaxis] if cls_only else padded(tokens)  # (batch, seq or 1, hidden)
    features = {
        "last_hidden_state": last_hidden_state,
        "pooler_output": bert.pooler(last_hidden_state),  # (batch, hidden): reads [:, 0]
        "attention_mask": tf.cast(real[:, :1] if cls_only else real, tf.int32),
    }
    if hidden_states:
        features["hidden_states"] = tf.stack([padded(output) for output in layer_outputs], axis=1)
    return features


def side_by_side(attention: tf_keras.layers.Layer) -> tuple[tf.Tensor, tf.Tensor]:
    """A TFBertSelfAttention's query, key and value kernels, (hidden, 3 * hidden), and biases, (3 * hidden,)."""
    dense = (attention.query, attention.key, attention.value)
    return tf.concat([d.kernel for d in dense], 1), tf.concat([d.bias for d in dense], 0)


def fused_query_key_value(backbone: tf_keras.Model) -> list[tuple[tf.Variable, tf.Variable]]:
    """Per encoder layer, side_by_side of its attention, as new variables: one copy, made now.

    What `packed_encoder_features(query_key_value=...)` reads; the copy does not follow
    later changes to the backbone's weights.
    """
    fused = []
    for layer in backbone.bert.encoder.layer:
        kernel, bias = side_by_side(layer.attention.self_attention)
        fused.append((tf.Variable(kernel, trainable=False, name="query_key_value/kernel"),
                      tf.Variable(bias, trainable=False, name="query_key_value/bias")))
    return fused
