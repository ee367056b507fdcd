"""BERT on real tokens only, for serving: no compute spent on padding.

A request of sentences of different lengths, padded to its longest, spends most of
its matrix multiplications on padding (on the sentiment corpus a batch of 32 is about
half padding). Here the encoder's per-token work (embeddings, the query/key/value,
output and feed-forward dense layers, layer norms) runs on the batch's real tokens
packed end to end, (tokens, hidden); only attention, which mixes the tokens of one
sentence, sees a padded (batch, heads, seq, seq) view. For a head that reads only
[CLS] (`cls_only`), the top layer's attention output and feed-forward layers run for
the [CLS] tokens alone: the other positions of the top layer feed nothing it reads.
The layers and weights are the TFBertModel's own (the branches' columns of them copied
once), called in inference mode, so the outputs equal the padded model's up to float
rounding.

With `branches` > 1 each layer is cut into that many parallel branches: each takes a
run of consecutive attention heads (its columns of the query, key and value projections,
its rows of the attention output) and a run of the feed-forward units (columns of the
intermediate dense layer, rows of the output one). The branches meet twice per layer,
where their partial outputs add up before each layer norm. TensorFlow runs independent
ops at once on its inter-op threads, so served with one thread per op (intra-op
parallelism 1) each core takes a branch and reads only its share of the weights. For
one short sentence that matters more than arithmetic: the encoder reads all its weights
(42 MB a call for MiniLM; the benchmark machine's L3 cache holds 32 MB) to do little work with each.
"""

import math

import tensorflow as tf
import tf_keras

from tfbert.checks import is_whole_number


def packed_encoder_features(
    backbone: tf_keras.Model,
    input_ids: tf.RaggedTensor,
    token_type_ids: tf.RaggedTensor,
    hidden_states: bool = False,
    cls_only: bool = False,
    branches: list | None = None,
) -> dict:
    """The dict a head reads (see tfbert.heads), for ragged int32 (batch, None) token rows.

    `backbone` is a TFBertModel; padded outputs are zero beyond each row's length.
    `hidden_states` adds every layer's output, (batch, layers + 1, seq, hidden).
    `cls_only` (not with hidden_states): last_hidden_state is (batch, 1, hidden), the
    [CLS] vectors only, and attention_mask (batch, 1); pooler_output is unchanged.
    `branches`: the layers' weights cut into parallel branches, as branch_weights returns
        them (the ServingModule holds them as variables, copied once); None: one branch,
        its weights put together on every call.
    """
    if cls_only and hidden_states:
        raise ValueError("cls_only computes the top layer for [CLS] only, so it cannot return hidden_states")
    bert = backbone.bert
    layers = bert.encoder.layer
    if branches is None:
        branches = branch_weights(backbone, 1)
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
    head_size = layers[0].attention.self_attention.attention_head_size

    def padded(packed: tf.Tensor) -> tf.Tensor:
        """(tokens, width) -> (batch, seq, width), zeros after each row's end."""
        return tf.gather(tf.pad(packed, [[0, 1], [0, 0]]), slot)

    def add_and_norm(norm: tf_keras.layers.Layer, updates: list[tf.Tensor]) -> tf.Tensor:
        """BERT's residual connection and layer norm on (tokens, hidden); its norms are built for rank 3."""
        return norm(tf.add_n(updates)[tf.newaxis])[0]

    def dense(inputs: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
        """A dense layer's matmul on rank-2 inputs (no tensordot), in the inputs' dtype."""
        outputs = tf.matmul(inputs, tf.cast(kernel, inputs.dtype))
        return outputs if bias is None else tf.nn.bias_add(outputs, tf.cast(bias, inputs.dtype))

    def rows(kernel: tf.Variable, widths: list[int]) -> list[tf.Tensor]:
        """`kernel` cut into consecutive row blocks of `widths` (slices along the first axis)."""
        starts = [sum(widths[:index]) for index in range(len(widths))]
        return [kernel[start : start + width] for start, width in zip(starts, widths)]

    layer_outputs = [tokens]
    for layer, parts in zip(layers, branches):
        top_cls_only = cls_only and layer is layers[-1]  # attention onward for each row's [CLS] only
        residual = tf.gather(tokens, input_ids.row_starts()) if top_cls_only else tokens
        output_dense = layer.attention.dense_output.dense
        widths = [part["query_key_value_kernel"].shape[-1] // 3 for part in parts]
        updates = [residual]
        for index, (part, output_kernel) in enumerate(zip(parts, rows(output_dense.kernel, widths))):
            # This branch's heads: queries, keys and values in one matmul, then per sentence and head.
            projected = padded(dense(tokens, part["query_key_value_kernel"], part["query_key_value_bias"]))
            shape = tf.shape(projected)  # (batch, seq, 3 * width)
            projected = tf.reshape(projected, [shape[0], shape[1], 3, -1, head_size])
            query, key, value = tf.unstack(tf.transpose(projected, [2, 0, 3, 1, 4]), 3)  # (batch, heads, seq, size)
            if top_cls_only:
                query = query[:, :, :1]
            scores = tf.matmul(query, key, transpose_b=True) / math.sqrt(head_size)
            probabilities = tf.nn.softmax(scores + key_bias, axis=-1)  # (batch, heads, queries, seq)
            context = tf.transpose(tf.matmul(probabilities, value), [0, 2, 1, 3])  # (batch, queries, heads, size)
            context = tf.reshape(context, [-1, widths[index]])  # (batch * queries, width)
            if not top_cls_only:
                context = tf.gather(context, real_slots)  # (tokens, width)
            # Its rows of the attention output; the first branch adds the bias.
            updates.append(dense(context, output_kernel, output_dense.bias if index == 0 else None))
        attended = add_and_norm(layer.attention.dense_output.LayerNorm, updates)

        output_dense = layer.bert_output.dense
        widths = [part["intermediate_kernel"].shape[-1] for part in parts]
        updates = [attended]
        for index, (part, output_kernel) in enumerate(zip(parts, rows(output_dense.kernel, widths))):
            intermediate = layer.intermediate.intermediate_act_fn(
                dense(attended, part["intermediate_kernel"], part["intermediate_bias"])
            )
            updates.append(dense(intermediate, output_kernel, output_dense.bias if index == 0 else None))
        tokens = add_and_norm(layer.bert_output.LayerNorm, updates)
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


def branch_weights(backbone: tf_keras.Model, branches: int = 1) -> list[list[dict[str, tf.Tensor]]]:
    """Per encoder layer, per branch: the columns of the weights that branch computes.

    Branch b takes a run of consecutive attention heads and a run of consecutive
    feed-forward units (as even as the counts allow): `query_key_value_kernel`
    (hidden, 3 * its heads * head size), its query, key and value columns side by side,
    and `query_key_value_bias`; `intermediate_kernel` (hidden, its units) and
    `intermediate_bias`. Copies, made now; packed_encoder_features reads the matching
    rows of the output kernels from the backbone itself. `branches` is at most the
    number of attention heads.
    """
    check_branches(backbone, branches)
    heads = backbone.bert.encoder.layer[0].attention.self_attention.num_attention_heads

    def bounds(count: int) -> list[tuple[int, int]]:
        """`count` cut into `branches` consecutive runs, (start, end) each."""
        cuts = [count * index // branches for index in range(branches + 1)]
        return list(zip(cuts, cuts[1:]))

    weights = []
    for layer in backbone.bert.encoder.layer:
        attention, intermediate = layer.attention.self_attention, layer.intermediate.dense
        size = attention.attention_head_size
        projections = (attention.query, attention.key, attention.value)
        parts = []
        for (first, last), (start, end) in zip(bounds(heads), bounds(intermediate.units)):
            columns = slice(first * size, last * size)
            parts.append({
                "query_key_value_kernel": tf.concat([dense.kernel[:, columns] for dense in projections], 1),
                "query_key_value_bias": tf.concat([dense.bias[columns] for dense in projections], 0),
                "intermediate_kernel": intermediate.kernel[:, start:end],
                "intermediate_bias": intermediate.bias[start:end],
            })
        weights.append(parts)
    return weights


def check_branches(backbone: tf_keras.Model, branches: int, what: str = "branches") -> None:
    """ValueError unless `branches` is an integer from 1 to `backbone`'s attention heads."""
    heads = backbone.bert.encoder.layer[0].attention.self_attention.num_attention_heads
    if not is_whole_number(branches, 1, heads):
        raise ValueError(
            f"{what} must be an integer from 1 to the encoder's {heads} attention heads "
            f"(best: the serving machine's cores), got {branches!r}"
        )
