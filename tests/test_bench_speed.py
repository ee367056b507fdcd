"""bench/speed.py's report: the stored results file renders from its JSON, and each system's
MFU is against the matmul peak of the type it multiplied in."""

import copy
import json
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from speed import markdown, own_peak, summarize  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def stored_report() -> dict:
    return json.loads((RESULTS / "speed.json").read_text())


def with_precision(precision: str) -> dict:
    """The stored report as if tfbert had trained in `precision`, its MFU derived as main() does."""
    report = copy.deepcopy(stored_report())
    run = report["runs"]["tfbert"]
    run["settings"]["precision"] = precision
    report["systems"]["tfbert"] = summarize(
        "tfbert", run, own_peak(run, report["matmul_peak_gflops"], report["bfloat16_matmul_peak_gflops"]))
    return report


def test_the_stored_markdown_is_what_its_json_renders():
    assert markdown(stored_report()) == (RESULTS / "speed.md").read_text()


def test_a_bfloat16_run_is_measured_against_the_bfloat16_peak():
    report = with_precision("mixed_bfloat16")
    tfbert = report["systems"]["tfbert"]
    own = tfbert["performed_gflops_per_second"] / report["bfloat16_matmul_peak_gflops"]
    assert tfbert["mfu"] == own and tfbert["peak_gflops"] == report["bfloat16_matmul_peak_gflops"]
    assert report["systems"]["pytorch"]["peak_gflops"] == report["matmul_peak_gflops"]  # the peers multiply in float32
    text = markdown(report)
    bound = own / report["bfloat16_layer_matmul_share"]
    assert f"tfbert multiplied in bfloat16: its MFU against the bfloat16 peak is {bound:.0%} of that bound." in text
    assert f"| tfbert MFU (against the matmul peak of the type it multiplied in) | {own:.3g} | >= 0.65 |" in text
    float32_ratio = tfbert["performed_gflops_per_second"] / report["matmul_peak_gflops"]
    assert f"Against the float32 peak, as the issue words the MFU, its FLOPs per second would read {float32_ratio:.1%}" in text


def test_a_float32_run_is_measured_against_the_float32_peak():
    report = with_precision("float32")
    tfbert = report["systems"]["tfbert"]
    assert tfbert["mfu"] == tfbert["performed_gflops_per_second"] / report["matmul_peak_gflops"]
    text = markdown(report)
    bound = tfbert["mfu"] / report["layer_matmul_share"]
    assert f"tfbert multiplied in float32: its MFU against the float32 peak is {bound:.0%} of that bound." in text
    assert "tfbert trained in float32, as the other systems did." in text
    assert "as the issue words the MFU" not in text


def test_steps_an_execution_of_several_left_untimed_are_said():
    report = copy.deepcopy(stored_report())
    assert f"{report['steps']} timed steps after {report['warmup']} warmup steps," in markdown(report)
    report["runs"]["tfbert"]["timed_steps"] = report["steps"] - 4  # steps_per_execution=4: timing starts at an execution's end
    untimed = report["warmup"] + 4
    assert f"(tfbert, whose executions run several steps: {report['steps'] - 4} timed after {untimed})" in markdown(report)


def test_only_a_quick_run_is_marked_as_no_measurement():
    report = copy.deepcopy(stored_report())
    assert not markdown(report).startswith("**QUICK run")
    report["quick"] = True
    assert markdown(report).startswith("**QUICK run (--quick): checks that the script works; not a measurement.**")
