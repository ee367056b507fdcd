"""tfbert: fine-tune BERT encoders for text classification with TensorFlow."""

import os

# TFBertModel is a tf-keras (Keras 2) model: make `tf.keras` mean tf-keras too.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# TensorFlow's oneDNN CPU kernels; TF turns them on by itself only on CPUs with AVX-512.
# On the 2-core AVX2 benchmark machine they took training from 1,244 to 1,685 real
# tokens/s (bench/results/HISTORY.md). Read once, when TensorFlow loads: import tfbert
# before tensorflow, or set it in the environment.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# tfbert never runs PyTorch (backbone weights load without it), but transformers imports
# torch whenever it is installed: 2-7 s of startup and 250 MB of RSS measured on the 2-core
# machine. USE_TORCH=0 keeps it out.
os.environ.setdefault("USE_TORCH", "0")
# transformers 4.57 warns on every TF class that TF support ends in v5; tfbert pins <5.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tfbert.env import IncompatibleEnvironment, check_environment  # noqa: E402

try:
    check_environment()
except IncompatibleEnvironment as error:
    raise SystemExit(f"tfbert: {error}") from None
