"""bench/variants.py: tfbert settings timed side by side in one process (tiny model, a few steps)."""

import statistics
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from common import load_average_at_end, machine_info  # noqa: E402
from speed import tfbert_training  # noqa: E402
from variants import markdown, parse_args, parse_variant, time_variants  # noqa: E402


def test_parse_variant():
    assert parse_variant("xla: trainer.jit_compile=true pipeline.batch_size=64") == (
        "xla", ["trainer.jit_compile=true", "pipeline.batch_size=64"])
    assert parse_variant("base:") == ("base", [])
    for bad in ("trainer.jit_compile=true", ": model=tiny"):
        with pytest.raises(ValueError, match=r"expected NAME: OVERRIDE .*'base:'"):
            parse_variant(bad)


def test_parse_args_refuses_bad_input(capsys):
    for argv in (["base:", "base: model=tiny"], ["base:", "--rounds", "0"], ["base:", "--steps", "x"], ["no colon"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    errors = capsys.readouterr().err
    assert "variant names must differ" in errors and "argument --rounds: must be at least 1, got 0" in errors
    assert "argument --steps: invalid integer value: 'x'" in errors
    assert "variant 'no colon': expected NAME: OVERRIDE" in errors


def test_tfbert_training_takes_the_trainer_step_settings(snippets_file):
    run = tfbert_training(["model=tiny", f"task.data_file={snippets_file}", "trainer.grad_accum_steps=2",
                           "trainer.steps_per_execution=2", "pipeline.batch_size=4"], batches=3)
    assert run.model.grad_accum_steps == 2
    assert run.model._steps_per_execution.numpy() == 2
    assert [int(labels.shape[0]) for _, labels in run.data] == [4, 4, 4]


def test_time_variants_interleaves_and_compares_within_rounds(snippets_file):
    common = ["model=tiny", f"task.data_file={snippets_file}"]
    variants = [("batch 8", [*common, "pipeline.batch_size=8"]), ("batch 4", [*common, "pipeline.batch_size=4"])]
    summary = time_variants(variants, steps=2, rounds=3)

    assert list(summary) == ["batch 8", "batch 4"]
    first, second = summary["batch 8"], summary["batch 4"]
    assert first["ratio_to_first"] == 1.0
    by_round = zip(second["real_tokens_per_second_by_round"], first["real_tokens_per_second_by_round"])
    assert second["ratio_to_first"] == pytest.approx(statistics.median(mine / base for mine, base in by_round))
    for row in summary.values():
        assert len(row["real_tokens_per_second_by_round"]) == 3
        assert row["real_tokens_per_second"] == statistics.median(row["real_tokens_per_second_by_round"])
        assert row["real_tokens_per_second"] > 0 and row["performed_gflops_per_second"] > 0
        assert 0 < row["padding_efficiency"] <= 1
    assert second["overrides"][-1] == "pipeline.batch_size=4"

    report = {"command": "python bench/variants.py ...", "steps": 2, "rounds": 3, "threads": 2,
              "machine": load_average_at_end(machine_info()), "variants": summary}
    table = markdown(report)
    assert "| batch 4 | `model=tiny" in table and "the ratio to `batch 8` taken within each round" in table
    assert table.rstrip().endswith("Command: `python bench/variants.py ...`")
