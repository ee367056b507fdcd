"""`trainer.precision`: the Keras mixed-precision policy a run trains in.

`auto` (the default) picks 16-bit compute where the hardware multiplies 16-bit numbers
natively, and float32 elsewhere:

    strategy tpu                                    mixed_bfloat16
    GPUs, compute capability >= 8.0 (Ampere on)     mixed_bfloat16  (no loss scaling needed)
    GPUs, compute capability 7.x (Volta, Turing)    mixed_float16   (dynamic loss scaling)
    older GPUs                                      float32
    CPU with avx512_bf16 or amx_bf16                mixed_bfloat16  (oneDNN's bfloat16 kernels)
    any other CPU                                   float32         (bfloat16 would be emulated)

Under every policy the weights, logits and loss stay float32 (tfbert.heads), and the
export computes in float32 (tfbert.export).
"""

from pathlib import Path

import tensorflow as tf

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
NATIVE_BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) of each visible GPU; (0, 0) where TensorFlow does not say."""
    return [
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def auto_precision(strategy: str, capabilities: list[tuple[int, int]], flags: set[str]) -> tuple[str, str]:
    """The policy `auto` means for this hardware, and why (see the module doc)."""
    if strategy == "tpu":
        return "mixed_bfloat16", "TPUs multiply bfloat16 natively"
    if capabilities:
        slowest = min(capabilities)
        if slowest >= (8, 0):
            return "mixed_bfloat16", f"GPU compute capability {slowest[0]}.{slowest[1]} multiplies bfloat16 natively"
        if slowest >= (7, 0):
            return "mixed_float16", f"GPU compute capability {slowest[0]}.{slowest[1]} multiplies float16 natively"
        return "float32", f"GPU compute capability {slowest[0]}.{slowest[1]} has no 16-bit tensor cores"
    native = sorted(flags.intersection(NATIVE_BFLOAT16_CPU_FLAGS))
    if native:
        return "mixed_bfloat16", f"this CPU multiplies bfloat16 natively ({', '.join(native)})"
    return "float32", f"this CPU has none of {', '.join(NATIVE_BFLOAT16_CPU_FLAGS)}: bfloat16 would be emulated"


def resolve_precision(precision: str, strategy: str) -> tuple[str, str]:
    """The policy name for `trainer.precision` and the reason; `auto` looks at this machine."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision, "set in the config"
    return auto_precision(strategy, gpu_compute_capabilities(), cpu_flags())
