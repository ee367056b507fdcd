"""SavedModel export for TensorFlow Serving."""

import shutil
import tempfile
from pathlib import Path

import tensorflow as tf
import tf_keras

from tfbert.classifier import INPUT_NAMES


class ServingModule(tf.Module):
    """What the SavedModel serves: token ids in; logits, probabilities and labels out.

    Args:
        model: the classifier (dict of int32 token tensors -> logits).
        label_names: class names in label-id order.
    """

    def __init__(self, model: tf_keras.Model, label_names):
        super().__init__()
        self.model = model
        self.label_names = tf.constant(list(label_names))

    def _outputs(self, features: dict) -> dict:
        logits = tf.cast(self.model(features, training=False), tf.float32)  # (batch, classes)
        label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (batch,)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "label_id": label_id,
            "label": tf.gather(self.label_names, label_id),
        }

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]
    )
    def serve_ids(self, input_ids, attention_mask, token_type_ids):
        return self._outputs(
            {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        )


def export_saved_model(model: tf_keras.Model, label_names, directory: Path) -> Path:
    """Write the SavedModel to `directory` atomically: a temporary sibling, then a rename."""
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; refusing to overwrite an export")
    directory.parent.mkdir(parents=True, exist_ok=True)
    module = ServingModule(model, label_names)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        tf.saved_model.save(
            module,
            str(staging),
            signatures={"serving_default": module.serve_ids, "serve_ids": module.serve_ids},
        )
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
