import logging

import pytest
import tf_keras

from tfbert.precision import auto_precision, cpu_flags, gpu_compute_capabilities, resolve_precision
from tfbert.trainer import Trainer


@pytest.mark.parametrize(
    "strategy, capabilities, flags, policy",
    [
        ("tpu", [], set(), "mixed_bfloat16"),
        ("mirrored", [(8, 0), (8, 6)], set(), "mixed_bfloat16"),
        ("mirrored", [(8, 0), (7, 5)], {"avx512_bf16"}, "mixed_float16"),  # the slowest GPU decides
        ("default", [(7, 0)], set(), "mixed_float16"),
        ("default", [(6, 1)], {"amx_bf16"}, "float32"),  # a GPU trains, not the CPU
        ("default", [], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
        ("default", [], {"amx_bf16", "amx_tile"}, "mixed_bfloat16"),
        ("default", [], {"avx2", "avx512f"}, "float32"),  # AVX-512 without bfloat16: emulated
        ("default", [], set(), "float32"),
    ],
)
def test_auto_picks_what_the_hardware_multiplies_natively(strategy, capabilities, flags, policy):
    chosen, reason = auto_precision(strategy, capabilities, flags)
    assert chosen == policy
    assert reason  # every choice says why


def test_the_reason_names_the_hardware():
    assert "avx512_bf16" in auto_precision("default", [], {"avx512_bf16"})[1]
    assert "7.5" in auto_precision("default", [(7, 5)], set())[1]
    assert "avx512_bf16, amx_bf16" in auto_precision("default", [], {"avx2"})[1]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()  # not Linux: no flags, so auto means float32
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "empty") == set()


def test_explicit_precisions_pass_through_and_bad_ones_are_refused():
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert resolve_precision(name, "default") == (name, "set in the config")
    with pytest.raises(ValueError, match=r"precision must be one of \['auto', 'float32', 'mixed_float16', 'mixed_bfloat16'\], got 'fp16'"):
        resolve_precision("fp16", "default")


def test_trainer_sets_and_logs_the_policy_auto_chose(caplog):
    expected, reason = auto_precision("default", gpu_compute_capabilities(), cpu_flags())
    with caplog.at_level(logging.INFO, logger="tfbert.trainer"):
        trainer = Trainer()
    assert trainer.precision == expected
    assert tf_keras.mixed_precision.global_policy().name == expected
    assert f"precision {expected} ({reason})" in caplog.text
