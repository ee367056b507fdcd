"""Insight callbacks: a tiny run's TensorBoard event files hold every kind of summary."""

import io
import json
import logging
import re
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import MINILM, TINY_CONFIG, compose_config, scalars, tiny_classifier
from tfbert.backbone import load_backbone
from tfbert.callbacks import ProgressLogger, ValidationInsights, duration, flat_hparams, insight_callbacks
from tfbert.classifier import build_classifier
from tfbert.figures import attention_figure, png_bytes
from tfbert.heads import ClsHead
from tfbert.objectives import BestEpoch, loss_and_metrics
from tfbert.optimization import create_adamw
from tfbert.pipeline import Pipeline
from tfbert.preprocessing import Preprocessor
from tfbert.train import run
from tfbert.trainer import Trainer

EPOCHS = 2


def tensor_summaries(log_dir) -> dict:
    """tag -> (plugin name, number of events) of the tensor summaries in `log_dir`."""
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {
        tag: (events.SummaryMetadata(tag).plugin_data.plugin_name, events.Tensors(tag))
        for tag in events.Tags()["tensors"]
    }


@pytest.fixture(scope="module")
def insight_run(snippets_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("insight_run")
    cfg = compose_config(
        "model=tiny", "head=mean", f"task.data_file={snippets_file}", f"trainer.epochs={EPOCHS}",
        "pipeline.batch_size=32", "insight.max_examples=10", "insight.attention_maps=2", f"run_dir={run_dir}",
    )
    return run_dir, run(cfg)


def test_hparams_and_best_epoch_metrics(insight_run):
    run_dir, metrics = insight_run
    summaries = tensor_summaries(run_dir / "tensorboard")
    assert summaries["_hparams_/session_start_info"][0] == "hparams"
    assert {"best/val_accuracy", "best/val_loss", "best/val_f1_macro"} <= set(summaries)
    best_accuracy = float(tf.make_ndarray(summaries["best/val_accuracy"][1][0].tensor_proto))
    assert best_accuracy == pytest.approx(metrics["validation"]["accuracy"], abs=1e-6)  # the restored epoch
    assert metrics["train_seconds"] > 0


def test_validation_insights_every_epoch(insight_run):
    run_dir, _ = insight_run
    summaries = tensor_summaries(run_dir / "tensorboard" / "validation_insights")
    expected = {
        "confusion_matrix": "images",
        "attention_cls_last_layer": "images",
        "pr_curve_negative/pr_curves": "pr_curves",
        "pr_curve_positive/pr_curves": "pr_curves",
        "misclassified": "text",
    }
    assert {tag: summaries[tag][0] for tag in expected} == expected
    assert all(len(summaries[tag][1]) == EPOCHS for tag in expected)
    attention = tf.make_ndarray(summaries["attention_cls_last_layer"][1][-1].tensor_proto)
    assert len(attention) == 2 + 2  # width, height, then one PNG per attention map
    table = tf.make_ndarray(summaries["misclassified"][1][-1].tensor_proto).item().decode()
    last_accuracy = scalars(run_dir / "tensorboard" / "validation", "epoch_accuracy")[-1]
    if last_accuracy < 1:  # the last epoch got some validation sentence wrong: the table lists them
        assert "| text | true | predicted | probability |" in table
    else:
        assert "classified correctly" in table


def test_val_f1_macro_joins_keras_scalars(insight_run):
    run_dir, metrics = insight_run
    assert len(scalars(run_dir / "tensorboard" / "validation", "epoch_f1_macro")) == EPOCHS


def test_projector_has_labelled_pooled_features(insight_run):
    run_dir, _ = insight_run
    projector = run_dir / "tensorboard" / "projector"
    config = (projector / "projector_config.pbtxt").read_text()
    assert 'metadata_path: "metadata.tsv"' in config
    rows = (projector / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "text\tlabel\tpredicted" and len(rows) == 1 + 10
    features = tf.train.load_variable(tf.train.latest_checkpoint(str(projector)), "embedding/.ATTRIBUTES/VARIABLE_VALUE")
    assert features.shape == (10, 32)  # (examples, hidden): the mean head pools hidden states
    # a run TensorBoard lists (it holds an event file), as its projector reads no other dir
    from tensorboard.backend.event_processing import io_wrapper

    assert str(projector) in io_wrapper.GetLogdirSubdirectories(str(run_dir / "tensorboard"))


@pytest.mark.parametrize("progress", [True, False])
def test_progress_line_per_epoch(snippets_file, tmp_path, caplog, capsys, progress):
    cfg = compose_config(
        "model=tiny", f"task.data_file={snippets_file}", "trainer.epochs=1", "insight.validation_insights=false",
        "insight.hparams_dashboard=false", f"insight.progress={progress}", "task.max_train_samples=32",
        f"run_dir={tmp_path}",
    )
    with caplog.at_level(logging.INFO):
        run(cfg)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("epoch ")]
    # Keras' verbose=2 line: `7/7 - 3s - loss: 0.6930 - accuracy: 0.5000 - val_loss: ...`
    keras_lines = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\d+/\d+ - .* - loss: ", line)]
    if progress:  # tfbert's line, and Keras' own epoch output off: one line per epoch
        (line,) = lines
        assert "epoch 1/1" in line and "val_accuracy" in line and line.endswith("about 0s left")
        assert not keras_lines
    else:  # Keras' own output instead (without a terminal: a line per epoch)
        assert not lines and keras_lines
    summary = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("results"))
    assert "accuracy" in summary and str(tmp_path / "metrics.json") in summary
    assert not (tmp_path / "tensorboard" / "validation_insights").exists()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_in_a_terminal_clears_before_the_epoch_line(monkeypatch, caplog):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model = tf_keras.Sequential([tf_keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with caplog.at_level(logging.INFO):
        model.fit(np.ones((12, 2)), np.ones(12), batch_size=4, epochs=2, verbose=0, callbacks=[ProgressLogger()])
    drawn = terminal.getvalue()
    assert "epoch 1/2:" in drawn and "epoch 2/2:" in drawn and "1/3 " in drawn  # a bar over each epoch's 3 steps
    assert drawn.endswith("\r") and drawn.rsplit("\r", 2)[-2].strip() == ""  # the last bar was blanked
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]


def test_a_resumed_epoch_bar_counts_its_rate_from_where_it_resumed(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    progress = ProgressLogger()
    progress.set_params({"epochs": 2, "steps": 10})
    progress.on_train_begin()
    progress.on_epoch_begin(1)
    progress.on_train_batch_end(6)  # Keras resumed the epoch at step 6 (0-based): 7 steps are done
    assert (progress.bar.n, progress.bar.initial, progress.bar.total) == (7, 7, 10)  # the rate counts from 7
    progress.on_train_batch_end(7)
    assert progress.bar.n == 8
    progress.on_train_end()
    assert progress.bar is None


def test_no_bar_without_a_terminal(monkeypatch):
    log_file = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log_file)
    model = tf_keras.Sequential([tf_keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 2)), np.ones(8), batch_size=4, epochs=1, verbose=0, callbacks=[ProgressLogger()])
    assert log_file.getvalue() == ""


@pytest.mark.parametrize("parallel_slices", [1, 3])
def test_validation_logs_equal_keras_evaluate(tiny_backbone, tokenizer, task, tmp_path, parallel_slices):
    """The callback's one pass logs what Keras' own validation pass would have (in the
    fitted model's parallel slices, or the whole batch)."""


    validation = Preprocessor(tokenizer, task.max_length)(task.splits)["validation"]
    head = ClsHead(num_outputs=2)
    model = build_classifier(tiny_backbone, head)
    loss, metrics = loss_and_metrics("single_label")
    model.compile(tf_keras.optimizers.Adam(), loss=loss, metrics=metrics)
    expected = model.evaluate(Pipeline(batch_size=8)(validation), return_dict=True, verbose=0)
    insights = ValidationInsights(
        tiny_backbone, head, tokenizer, validation, task.label_names, log_dir=tmp_path / "insights",
        projector_dir=tmp_path / "projector", monitor=None,
    )
    model.parallel_slices = parallel_slices
    insights.set_model(model)
    logs = insights.validation_logs(insights.predict()[0])
    assert logs == pytest.approx({"val_loss": expected["loss"], "val_accuracy": expected["accuracy"]}, abs=1e-5)


def test_attention_maps_of_a_batch_equal_each_example_alone(tiny_backbone, tokenizer, task, tmp_path):
    """The attention maps come from one padded call; each equals a call on its example alone."""

    validation = Preprocessor(tokenizer, task.max_length)(task.splits)["validation"]
    insights = ValidationInsights(
        tiny_backbone, ClsHead(num_outputs=2), tokenizer, validation, task.label_names,
        log_dir=tmp_path / "insights", projector_dir=tmp_path / "projector", monitor=None,
    )
    indices = [0, 1, 2, 3]
    lengths = [len(validation[index]["input_ids"]) for index in indices]
    assert len(set(lengths)) > 1  # the batch pads some of them
    for index, weights in zip(indices, insights.cls_attention(indices)):
        alone = tiny_backbone(**insights._padded([index]), output_attentions=True, training=False)
        expected = alone.attentions[-1][0, :, 0, :].numpy()
        assert weights.shape == expected.shape == (tiny_backbone.config.num_attention_heads, lengths[index])
        np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_a_validating_callback_replaces_keras_validation(tmp_path):
    """Keras does not evaluate validation_data (here: batches it could not run) when a callback validates."""

    classifier = tiny_classifier()

    class Validator(tf_keras.callbacks.Callback):
        validates = True

        def on_epoch_end(self, epoch, logs=None):
            logs.update(val_loss=1.0 - epoch / 10, val_accuracy=0.5 + epoch / 10)

    ids = np.full((4, 6), 1000, np.int32)
    tokens = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    train = tf.data.Dataset.from_tensor_slices((tokens, np.array([0, 1, 0, 1], np.int32))).batch(2)
    unusable = tf.data.Dataset.from_tensors(({"input_ids": np.zeros((2, 3, 3), np.int32)}, np.zeros(2, np.int32)))
    history = Trainer(epochs=2).fit(
        classifier, create_adamw(num_train_steps=4), *loss_and_metrics("single_label"), train, 2, unusable,
        tmp_path, callbacks=[Validator()],
    )
    assert history.history["val_accuracy"] == [0.5, 0.6]


def test_validation_insights_are_the_validation_on_one_device_only(tiny_backbone, tokenizer, task, tmp_path):
    """Without a strategy or with one_device its pass is the run's validation; over a
    mirrored strategy (replicas whose metrics only sum up in Keras' pass) it is not."""
    validation = Preprocessor(tokenizer, task.max_length)(task.splits)["validation"]
    insights = ValidationInsights(
        tiny_backbone, ClsHead(num_outputs=2), tokenizer, validation, task.label_names,
        log_dir=tmp_path / "insights", projector_dir=tmp_path / "projector", monitor=None,
    )
    assert insights.validates is True
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert insights.validates is True
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert insights.validates is False


@pytest.mark.parametrize("monitor, values, epochs_run, best", [
    ("val_accuracy", [0.5, 0.7, 0.6, 0.7, 0.9, 0.9], 4, 0.7),  # no gain at epochs 3 and 4
    ("val_loss", [0.9, 0.8, 0.5, 0.6, 0.4, 0.3], 6, 0.3),  # each plateau shorter than the patience
])
def test_early_stopping_follows_the_monitor(tmp_path, monitor, values, epochs_run, best):
    """Validation metrics come from a callback (as ValidationInsights logs them); the run stops
    after `patience` epochs without a gain, its backup is gone and the best epoch stays best."""


    classifier = tiny_classifier()

    class Validator(tf_keras.callbacks.Callback):
        validates = True

        def on_epoch_end(self, epoch, logs=None):
            logs.update(val_loss=values[epoch], val_accuracy=values[epoch])

    ids = np.full((2, 6), 1000, np.int32)
    tokens = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    train = tf.data.Dataset.from_tensor_slices((tokens, np.array([0, 1], np.int32))).batch(2)
    history = Trainer(epochs=6, monitor=monitor, early_stopping_patience=2).fit(
        classifier, create_adamw(num_train_steps=6), *loss_and_metrics("single_label"), train, 1, train,
        tmp_path, callbacks=[Validator()],
    )
    assert history.history[monitor] == values[:epochs_run]
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["value"] == pytest.approx(best)
    assert (tmp_path / "backup").exists()  # the finished training's, until the run's outputs are written


def test_early_stopping_resumes_where_the_stopped_run_was(tmp_path):
    """SIGTERM in epoch 3 (its one step is its last: the run stops after validating it); the
    rerun stops after epoch 4, as an uninterrupted run does (test above), and a rerun after
    that (the outputs not written yet) trains nothing."""
    import os
    import signal

    from tfbert.checkpoints import Preempted

    values = [0.5, 0.7, 0.6, 0.7, 0.9, 0.9]

    class Validator(tf_keras.callbacks.Callback):
        validates = True

        def on_epoch_end(self, epoch, logs=None):
            logs.update(val_loss=values[epoch], val_accuracy=values[epoch])

    class TermInEpoch3(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    ids = np.full((2, 6), 1000, np.int32)
    tokens = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    train = tf.data.Dataset.from_tensor_slices((tokens, np.array([0, 1], np.int32))).batch(2)

    def fit(*callbacks):
        return Trainer(epochs=6, monitor="val_accuracy", early_stopping_patience=2).fit(
            tiny_classifier(), create_adamw(num_train_steps=6), *loss_and_metrics("single_label"), train, 1, train,
            tmp_path, callbacks=[Validator(), *callbacks],
        )

    with pytest.raises(Preempted, match="stopped on SIGTERM at epoch 3"):
        fit(TermInEpoch3())
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["epoch"] == 2  # epoch 3 was validated
    # The first process's training time (as if it had trained 1000 s): the resumed run adds its own
    (tmp_path / "backup" / "train_seconds.json").write_text('{"train_seconds": 1000.0}')
    resumed = fit()
    assert resumed.epoch == [3] and resumed.epochs_trained == 4  # epoch 4 (index 3) only, then the stop
    assert 1000 < resumed.train_seconds < 1000 + 60
    again = fit()
    assert again.epoch == [] and again.epochs_trained == 4


@pytest.mark.parametrize("patience", [0, 1.5, "2"])
def test_a_bad_early_stopping_patience_is_named(patience):
    with pytest.raises(ValueError, match=f"early_stopping_patience must be a whole number of epochs above 0, or null, got {patience!r}"):
        Trainer(early_stopping_patience=patience)


@pytest.mark.parametrize("monitor", ["val_f1", "val_f1_macro"])
def test_a_monitor_the_run_does_not_log_fails_before_training(tmp_path, monitor):
    """Checked against the compiled metrics and what the callbacks declare they log; the
    training data here would fail in the first step, so the error comes before it."""
    classifier = tiny_classifier()
    unusable = tf.data.Dataset.from_tensors(({"input_ids": np.zeros((2, 3, 3), np.int32)}, np.zeros(2, np.int32)))
    with pytest.raises(ValueError, match=rf"trainer.monitor='{monitor}' is not a metric this run logs; "
                                         r"it logs \['val_accuracy', 'val_loss'\]"):
        Trainer(epochs=1, monitor=monitor).fit(
            classifier, create_adamw(num_train_steps=1), *loss_and_metrics("single_label"), unusable, 1, unusable, tmp_path,
        )


@pytest.mark.parametrize("setting, value", [("max_examples", -1), ("attention_maps", -2), ("attention_maps", 1.5)])
def test_bad_insight_counts_are_named(tmp_path, setting, value):
    run_parts = dict(run_dir=tmp_path, backbone=None, head=None, tokenizer=None, validation=None, label_names=["a", "b"],
                     problem_type="single_label", monitor=None, hparams={})
    with pytest.raises(ValueError, match=rf"insight.{setting} must be a whole number, 0 or more \(0: none\), got {value}"):
        insight_callbacks(**run_parts, **{setting: value})


def test_best_epoch_follows_the_monitor():
    accuracy = BestEpoch(None)
    assert [accuracy.update({"val_accuracy": value, "val_loss": 1.0}) for value in (0.5, 0.7, 0.6)] == [True, True, False]
    loss = BestEpoch("val_loss")
    assert [loss.update({"val_loss": value}) for value in (0.5, 0.7, 0.4)] == [True, False, True]
    not_finite_first = BestEpoch("val_loss")
    values = (float("nan"), 0.9, float("inf"), 0.8)
    assert [not_finite_first.update({"val_loss": value}) for value in values] == [False, True, False, True]
    resumed = BestEpoch(None, best=0.8)  # the best.json of the run it resumes
    assert [resumed.update({"val_accuracy": value}) for value in (0.7, 0.9)] == [False, True]


def test_flat_hparams_are_scalars():
    hparams = flat_hparams(compose_config("head=cls", "optimizer.learning_rate=3e-5"))
    assert hparams["head"] == "ClsHead" and hparams["optimizer.learning_rate"] == 3e-5
    assert hparams["pipeline.batch_size"] == 32 and hparams["seed"] == 42
    assert all(isinstance(value, (bool, int, float, str)) for value in hparams.values())


@pytest.mark.parametrize("seconds, text", [(42.4, "42s"), (185, "3m05s"), (3725, "1h02m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_a_bfloat16_model_gives_float32_insights(tokenizer, task, tmp_path):
    """A model trained in mixed_bfloat16 computes its attentions and features in bfloat16;
    the figures and the projector get them as float32 (matplotlib cannot draw bfloat16)."""


    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)
        head = ClsHead(num_outputs=2)
        model = build_classifier(backbone, head)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    validation = Preprocessor(tokenizer, task.max_length)(task.splits)["validation"]
    insights = ValidationInsights(
        backbone, head, tokenizer, validation, task.label_names, log_dir=tmp_path / "insights",
        projector_dir=tmp_path / "projector", monitor=None,
    )
    insights.set_model(model)
    assert backbone(**insights._padded([0]), output_attentions=True).attentions[-1].dtype == tf.bfloat16
    weights = insights.cls_attention([0, 1])
    assert [row.dtype for row in weights] == [np.float32, np.float32]
    tokens = tokenizer.convert_ids_to_tokens(insights.token_ids[0])
    assert png_bytes(attention_figure(tokens, weights[0], "bfloat16 model")).startswith(b"\x89PNG")
    logits, pooled = insights.predict()
    assert logits.dtype == pooled.dtype == np.float32 and np.isfinite(pooled).all()


def test_a_resumed_run_reports_the_best_epoch_its_checkpoint_holds(tmp_path):
    """Epoch 2 of a run cut off after it is the best so far (best.json); the resumed epoch 3 is
    worse: the HParams dashboard's best/* values stay epoch 2's, the ones the checkpoint keeps."""
    from tfbert.callbacks import HParamsLogger
    from tfbert.checkpoints import write_json

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    write_json(checkpoints / "best.json", {"checkpoint": "best-0002", "epoch": 2, "monitor": "val_accuracy",
                                           "value": 0.8, "logs": {"val_accuracy": 0.8, "val_loss": 0.4}})
    logger = HParamsLogger(tmp_path / "tensorboard", {"seed": 1}, None, checkpoints)
    logger.on_train_begin()
    logger.on_epoch_end(2, {"val_accuracy": 0.7, "val_loss": 0.3})
    logger.on_train_end()
    assert scalars(tmp_path / "tensorboard", "best/val_accuracy") == [pytest.approx(0.8)]
    assert scalars(tmp_path / "tensorboard", "best/val_loss") == [pytest.approx(0.4)]


def test_an_epoch_cut_short_gets_no_validation_insights(tiny_backbone, tokenizer, task, tmp_path):
    """After SIGTERM, Ctrl-C or a NaN stopped training mid-epoch, the epoch's end writes no
    insights and logs no val_* metrics: the rerun that resumes the epoch validates it."""
    validation = Preprocessor(tokenizer, task.max_length)(task.splits)["validation"]
    head = ClsHead(num_outputs=2)
    model = build_classifier(tiny_backbone, head)
    insights = ValidationInsights(tiny_backbone, head, tokenizer, validation, task.label_names,
                                  log_dir=tmp_path / "insights", projector_dir=tmp_path / "projector", monitor=None)
    insights.set_model(model)
    insights.on_train_begin()
    model.stop_training = True
    logs = {"loss": 0.5}
    insights.on_epoch_end(0, logs)
    insights.on_train_end()
    assert logs == {"loss": 0.5} and not (tmp_path / "projector").exists()
    assert tensor_summaries(tmp_path / "insights") == {}
