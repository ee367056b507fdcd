import pytest
import tf_keras

from tfbert.optimization import create_adamw, warmup_linear_decay


def test_warmup_then_linear_decay_to_zero():
    schedule = warmup_linear_decay(1e-3, num_train_steps=100, warmup_ratio=0.1)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert values == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-9)


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


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_train_steps": 0}, "num_train_steps must be positive"), ({"num_train_steps": 5, "warmup_ratio": 1.0}, r"\[0, 1\)")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_adamw(**kwargs)
