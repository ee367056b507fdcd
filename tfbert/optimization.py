"""AdamW with linear warmup and linear decay to zero, as BERT was fine-tuned."""

import tf_keras
from transformers.optimization_tf import WarmUp

# LayerNorm scales/offsets and biases are not decayed (as in BERT).
NO_WEIGHT_DECAY = ["LayerNorm", "layer_norm", "bias"]


def create_adamw(
    num_train_steps: int,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    global_clipnorm: float | None = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-6,
) -> tf_keras.optimizers.AdamW:
    """AdamW whose learning rate rises linearly for `warmup_ratio` of the steps, then falls to 0.

    Args:
        num_train_steps: optimizer steps of the whole run (known once data is batched).
        learning_rate: peak learning rate, reached at the end of warmup.
        weight_decay: decoupled weight decay, not applied to LayerNorm and biases.
        warmup_ratio: fraction of the steps spent warming up.
        global_clipnorm: clip gradients to this global norm (None: no clipping).
    """
    optimizer = tf_keras.optimizers.AdamW(
        learning_rate=warmup_linear_decay(learning_rate, num_train_steps, warmup_ratio),
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=global_clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


def warmup_linear_decay(
    learning_rate: float, num_train_steps: int, warmup_ratio: float
) -> tf_keras.optimizers.schedules.LearningRateSchedule:
    """0 -> learning_rate over the first warmup_ratio of the steps, then linearly -> 0."""
    if num_train_steps < 1:
        raise ValueError(f"num_train_steps must be positive, got {num_train_steps}")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    warmup_steps = int(warmup_ratio * num_train_steps)
    decay = tf_keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps=num_train_steps - warmup_steps, end_learning_rate=0.0
    )
    return WarmUp(learning_rate, decay, warmup_steps) if warmup_steps else decay
