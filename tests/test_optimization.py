import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import ROOT
from tfbert.optimization import FusedAdamW, create_adamw, warmup_linear_decay


def test_warmup_then_linear_decay_to_zero():
    schedule = warmup_linear_decay(1e-3, num_train_steps=100, warmup_ratio=0.1)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert values == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-9)


@pytest.mark.parametrize("ratio, warmup_steps", [(0.29, 29), (0.57, 57), (0.1, 10), (0.125, 12)])
def test_warmup_takes_the_whole_steps_of_its_share(ratio, warmup_steps):
    """0.29 * 100 computes 28.999...: still 29 warmup steps (the peak at step 29)."""
    schedule = warmup_linear_decay(1.0, num_train_steps=100, warmup_ratio=ratio)
    values = [float(schedule(step)) for step in range(101)]
    assert values.index(max(values)) == warmup_steps


def test_no_warmup():
    schedule = warmup_linear_decay(1e-3, num_train_steps=10, warmup_ratio=0.0)
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(10)) == 0.0


def test_layer_norm_and_bias_are_not_decayed():
    optimizer = create_adamw(num_train_steps=10)
    assert isinstance(optimizer, tf_keras.optimizers.AdamW)
    dense = tf_keras.layers.Dense(2)
    dense.build((None, 3))
    optimizer.build(dense.trainable_variables)
    kernel, bias = dense.kernel, dense.bias
    assert optimizer._use_weight_decay(kernel) and not optimizer._use_weight_decay(bias)
    # TFBertModel's names: .../attention/output/LayerNorm/gamma, .../embeddings/LayerNorm/beta
    for name in ("attention/output/LayerNorm/gamma", "embeddings/LayerNorm/beta"):
        assert not optimizer._use_weight_decay(tf.Variable(tf.ones(3), name=name))
    assert optimizer._use_weight_decay(tf.Variable(tf.ones((3, 3)), name="attention/self/query/kernel"))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_train_steps": 0}, "num_train_steps must be positive"), ({"num_train_steps": 5, "warmup_ratio": 1.0}, r"\[0, 1\)")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_adamw(**kwargs)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("learning_rate", -1.0, r"learning_rate must be a number above 0, got -1.0"),
        ("learning_rate", 0, "learning_rate must be a number above 0, got 0"),
        ("learning_rate", "fast", "learning_rate must be a number above 0, got 'fast'"),
        ("weight_decay", -0.1, r"weight_decay must be a number, 0 or more, got -0.1"),
        ("beta_1", 1.0, r"beta_1 must be a number in \[0, 1\), got 1.0"),
        ("beta_2", True, r"beta_2 must be a number in \[0, 1\), got True"),
        ("epsilon", 0.0, "epsilon must be a number above 0, got 0.0"),
        ("global_clipnorm", -1, r"global_clipnorm must be a number above 0 \(or null: no clipping\), got -1"),
    ],
)
def test_bad_settings_are_named(setting, value, message):
    with pytest.raises(ValueError, match=message):
        create_adamw(num_train_steps=10, **{setting: value})


def test_integer_settings_train_like_floats():
    # Hydra gives `optimizer.learning_rate=1` as an int; the schedule must still be float32.
    variable = tf.Variable([1.0, 2.0], name="dense/kernel")
    results = []
    for learning_rate, weight_decay in ((1, 0), (1.0, 0.0)):
        variable.assign([1.0, 2.0])
        optimizer = create_adamw(num_train_steps=4, learning_rate=learning_rate, weight_decay=weight_decay,
                                 warmup_ratio=0)
        optimizer.apply_gradients([(tf.constant([0.5, -0.5]), variable)])
        results.append(variable.numpy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], [1.0, 2.0])


def train_embedding_and_dense(optimizer, jit_compile=False, dense=False):
    """Three steps on a gathered embedding (sparse gradient; `dense`: made dense), a kernel and
    a bias; their values."""
    embedding = tf.Variable(tf.reshape(tf.range(12, dtype=tf.float32) / 10, (6, 2)), name="embeddings/w")
    kernel = tf.Variable([[0.5, -1.0], [2.0, 0.25]], name="dense/kernel")
    bias = tf.Variable([0.1, -0.1], name="dense/bias")
    variables = [embedding, kernel, bias]

    @tf.function(jit_compile=jit_compile)
    def step(ids):
        with tf.GradientTape() as tape:
            hidden = tf.matmul(tf.gather(embedding, ids), kernel) + bias
            loss = tf.reduce_sum(tf.square(hidden - 1.0))
        gradients = tape.gradient(loss, variables)
        if dense:
            gradients[0] = tf.convert_to_tensor(gradients[0])
        optimizer.apply_gradients(zip(gradients, variables))
        return gradients[0]

    optimizer.build(variables)
    sparse = [step(tf.constant(ids)) for ids in ([0, 2, 2], [1, 5], [3, 0])]
    return [variable.numpy() for variable in variables], sparse


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_fused_adamw_matches_keras_adamw(jit_compile):
    """Not lazy, the fused kernel is the same AdamW, sparse embedding gradients and weight decay
    included. Keras' AdamW gets the embedding's gradient dense: on a sparse one (row 2 twice)
    its clipping would count the repeated rows apart, a norm that is not the gradient's."""
    settings = dict(learning_rate=0.05, weight_decay=0.1, epsilon=1e-6, global_clipnorm=1.0)
    keras_optimizer = tf_keras.optimizers.AdamW(**settings)
    fused_optimizer = FusedAdamW(**settings)
    for optimizer in (keras_optimizer, fused_optimizer):
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    expected, _ = train_embedding_and_dense(keras_optimizer, dense=True)
    fused, gradients = train_embedding_and_dense(fused_optimizer, jit_compile)
    assert all(isinstance(gradient, tf.IndexedSlices) for gradient in gradients)
    assert not np.allclose(fused[0], np.reshape(np.arange(12) / 10, (6, 2)))  # it did train
    for got, want in zip(fused, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# In a fresh process (logical devices must be set before TensorFlow starts): three steps of
# Keras' AdamW and of FusedAdamW mirrored over two CPUs, each replica with its own batch.
MIRRORED_STEPS = """
import json
import numpy as np
import tensorflow as tf
import tf_keras
from tfbert.optimization import FusedAdamW
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
inputs = strategy.experimental_distribute_values_from_function(
    lambda context: tf.constant([[1.0, 2.0]]) * (context.replica_id_in_sync_group + 1))
weights = {}
for optimizer_class in (tf_keras.optimizers.AdamW, FusedAdamW):
    with strategy.scope():
        kernel = tf.Variable([[0.5, -1.0], [2.0, 0.25]], name="dense/kernel")
        optimizer = optimizer_class(learning_rate=0.05, weight_decay=0.1)
        optimizer.build([kernel])

    @tf.function
    def step(x):
        def replica_step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(tf.matmul(x, kernel) - 1.0))
            optimizer.apply_gradients([(tape.gradient(loss, kernel), kernel)])
        strategy.run(replica_step, args=(x,))

    for _ in range(3):
        step(inputs)
    weights[optimizer_class.__name__] = [v.numpy().tolist() for v in kernel.values]
print(json.dumps(weights))
"""


def test_fused_adamw_matches_keras_adamw_mirrored():
    """Over two replicas each variable copy decays once a step, as with Keras' AdamW."""
    process = subprocess.run([sys.executable, "-c", MIRRORED_STEPS], capture_output=True, text=True, cwd=ROOT)
    assert process.returncode == 0, process.stderr[-3000:]
    weights = json.loads(process.stdout.splitlines()[-1])
    keras, fused = np.array(weights["AdamW"]), np.array(weights["FusedAdamW"])
    assert keras.shape == (2, 2, 2)  # the kernel's copy on each replica
    np.testing.assert_allclose(fused[0], fused[1])  # the copies stay in sync
    np.testing.assert_allclose(fused, keras, rtol=1e-5, atol=1e-6)
    assert not np.allclose(keras[0], [[0.5, -1.0], [2.0, 0.25]])  # it did train


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_lazy_embeddings_update_only_the_rows_a_batch_uses(jit_compile):
    """Each step: AdamW (moments, bias correction, weight decay) on the used rows, by hand."""
    lr, weight_decay, beta_1, beta_2, epsilon = 0.05, 0.1, 0.9, 0.999, 1e-6
    start = np.reshape(np.arange(12, dtype=np.float32) / 10, (6, 2))
    table = tf.Variable(start, name="embeddings/w")
    optimizer = FusedAdamW(learning_rate=lr, weight_decay=weight_decay, epsilon=epsilon, lazy_embeddings=True)

    @tf.function(jit_compile=jit_compile)
    def step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.gather(table, ids) - 1.0))
        optimizer.apply_gradients([(tape.gradient(loss, table), table)])

    expected, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t, ids in enumerate(([0, 2, 2], [1, 5], [3, 0]), start=1):
        step(tf.constant(ids))
        gradient = np.zeros_like(start)
        np.add.at(gradient, ids, 2 * (expected[ids] - 1.0))  # a repeated id's gradients add up
        rows = np.unique(ids)
        m[rows] = beta_1 * m[rows] + (1 - beta_1) * gradient[rows]
        v[rows] = beta_2 * v[rows] + (1 - beta_2) * gradient[rows] ** 2
        expected[rows] -= lr * weight_decay * expected[rows]
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        expected[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + epsilon)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table.numpy()[4], start[4])  # never used: untouched
    assert not np.allclose(table.numpy()[[0, 1, 2, 3, 5]], start[[0, 1, 2, 3, 5]])


def test_create_adamw_uses_the_fused_kernel():
    assert isinstance(create_adamw(num_train_steps=10), FusedAdamW)
    assert not create_adamw(num_train_steps=10).lazy_embeddings
    assert create_adamw(num_train_steps=10, lazy_embeddings=True).lazy_embeddings
    assert FusedAdamW.from_config(FusedAdamW(lazy_embeddings=True).get_config()).lazy_embeddings
    assert isinstance(create_adamw(num_train_steps=10, layer_decay=0.9, num_layers=2), FusedAdamW)


def toy_variables():
    """One equal weight per place a learning rate can differ: embeddings, layers 0-1, head."""
    names = ["bert/embeddings/w", "bert/encoder/layer_._0/w", "bert/encoder/layer_._1/w", "head/logits/kernel"]
    return {name: tf.Variable([1.0, -2.0], name=f"toy/{name}") for name in names}


@pytest.mark.parametrize("weight_decay", [0.0, 0.1], ids=["adam", "adamw"])
def test_layer_decay_scales_each_layers_step(weight_decay):
    variables = toy_variables()
    optimizer = create_adamw(
        num_train_steps=10, learning_rate=1e-2, warmup_ratio=0.0, weight_decay=weight_decay,
        global_clipnorm=None, layer_decay=0.5, num_layers=2,
    )
    optimizer.apply_gradients([(tf.constant([0.3, 0.3]), variable) for variable in variables.values()])
    step = {name.split("/")[-2]: 1.0 - variable.numpy()[0] for name, variable in variables.items()}
    # The head learns at the full rate; layer i of 2 at 0.5^(2 - i), the embeddings at 0.5^3.
    assert step["logits"] > 0
    assert step == pytest.approx(
        {"logits": step["logits"], "layer_._1": step["logits"] / 2, "layer_._0": step["logits"] / 4,
         "embeddings": step["logits"] / 8},
        rel=1e-4,
    )
    assert float(optimizer.learning_rate) == pytest.approx(1e-2)  # outside an update: the base rate


def test_layer_decay_factors_of_a_real_bert(tiny_backbone):
    optimizer = create_adamw(num_train_steps=10, layer_decay=0.9, num_layers=2)
    # the model's own name prefix (tf_bert_model, tf_bert_model_1, ...) depends on what ran before
    scales = {variable.name.split("/", 1)[1]: optimizer.learning_rate_scale(variable)
              for variable in tiny_backbone.variables}
    assert scales["bert/embeddings/word_embeddings/weight:0"] == pytest.approx(0.9**3)
    assert scales["bert/encoder/layer_._0/output/dense/kernel:0"] == pytest.approx(0.9**2)
    assert scales["bert/encoder/layer_._1/attention/self/query/bias:0"] == pytest.approx(0.9)
    assert scales["bert/pooler/dense/kernel:0"] == 1.0


def test_layer_decay_trains_inside_fit():
    from tests.conftest import MINILM, TINY_CONFIG
    from tfbert.backbone import load_backbone
    from tfbert.classifier import INPUT_NAMES, build_classifier
    from tfbert.heads import ClsHead

    backbone, head = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG), ClsHead(2)
    model = build_classifier(backbone, head)
    # epsilon far below any gradient: Adam's first step then moves each weight by its learning rate
    optimizer = create_adamw(num_train_steps=2, layer_decay=0.8, num_layers=2, epsilon=1e-12)
    model.compile(optimizer, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tokens = {name: np.ones((4, 5), np.int32) for name in INPUT_NAMES}
    tokens["input_ids"] = np.array([[101, 2204, 3185, 102, 0]] * 4, np.int32)
    layers = backbone.bert.encoder.layer
    watched = [  # (variable, its learning-rate scale against the head's)
        (backbone.bert.embeddings.weight, 0.8**3),
        (layers[0].intermediate.dense.kernel, 0.8**2),
        (layers[1].intermediate.dense.kernel, 0.8),
        (head.output_layer.kernel, 1.0),
    ]
    before = [variable.numpy() for variable, _ in watched]
    history = model.fit(tokens, np.array([0, 1, 0, 1]), batch_size=4, verbose=0)  # one step, no warmup
    assert np.isfinite(history.history["loss"]).all()
    # The largest moves scale down the encoder as layer_decay says, inside fit's compiled step too.
    largest = [np.abs(variable.numpy() - old).max() for (variable, _), old in zip(watched, before)]
    for (variable, scale), moved in zip(watched, largest):
        assert moved / largest[-1] == pytest.approx(scale, rel=0.02), variable.name
    clone = type(optimizer).from_config(optimizer.get_config())
    assert (clone.layer_decay, clone.num_layers) == (0.8, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer_decay": 1.5, "num_layers": 2}, r"layer_decay must be a number in \(0, 1\] .* got 1.5"),
        ({"layer_decay": "abc", "num_layers": 2}, r"layer_decay must be a number in \(0, 1\] .* got 'abc'"),
        ({"layer_decay": 0.9}, "layer_decay needs num_layers.* got None"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be a number in \[0, 1\), got 1.0"),
        ({"warmup_ratio": "abc"}, r"warmup_ratio must be a number in \[0, 1\), got 'abc'"),
    ],
)
def test_bad_layer_decay_or_warmup(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_adamw(num_train_steps=10, **kwargs)


def test_a_layer_beyond_num_layers_is_named():
    optimizer = create_adamw(num_train_steps=10, layer_decay=0.9, num_layers=2)
    with pytest.raises(ValueError, match="layer 2, but num_layers=2"):
        optimizer.learning_rate_scale(tf.Variable(0.0, name="bert/encoder/layer_._2/w"))
