"""bench/speed.py's report: the stored results file renders from its JSON, and the MFU
sentences use the type tfbert multiplied in."""

import copy
import json
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from speed import like_for_like_mfu, markdown  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def stored_report() -> dict:
    return json.loads((RESULTS / "speed.json").read_text())


def test_the_stored_markdown_is_what_its_json_renders():
    assert markdown(stored_report()) == (RESULTS / "speed.md").read_text()


def test_a_bfloat16_run_is_measured_against_the_bfloat16_peak():
    report = copy.deepcopy(stored_report())
    report["runs"]["tfbert"]["settings"]["precision"] = "mixed_bfloat16"
    performed = report["systems"]["tfbert"]["performed_gflops_per_second"]
    own = performed / report["bfloat16_matmul_peak_gflops"]
    assert like_for_like_mfu(report) == own
    bound = own / report["bfloat16_layer_matmul_share"]
    assert f"tfbert multiplied in bfloat16: its MFU against the bfloat16 peak is {bound:.0%} of that bound." in markdown(report)


def test_a_float32_run_has_no_second_mfu_row():
    report = copy.deepcopy(stored_report())
    report["runs"]["tfbert"]["settings"]["precision"] = "float32"
    assert like_for_like_mfu(report) is None
    text = markdown(report)
    bound = report["systems"]["tfbert"]["mfu"] / report["layer_matmul_share"]
    assert f"tfbert multiplied in float32: its MFU against the float32 peak is {bound:.0%} of that bound." in text
    assert "tfbert trained in float32, as the other systems did." in text
    assert "against the bfloat16 matmul peak (it multiplied in bfloat16)" not in text


def test_only_a_quick_run_is_marked_as_no_measurement():
    report = copy.deepcopy(stored_report())
    assert not markdown(report).startswith("**QUICK run")
    report["quick"] = True
    assert markdown(report).startswith("**QUICK run (--quick): checks that the script works; not a measurement.**")
