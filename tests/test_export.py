"""The serving export: TF Serving layout, raw-text signature, model card, served without tfbert."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from tests.conftest import EXPORT_MAX_LENGTH as MAX_LENGTH, MINILM, compose_config
from tfbert.classifier import INPUT_NAMES, build_classifier
from tfbert.export import Exporter, ServingModule, main
from tfbert.heads import MeanPoolingHead
from tfbert.model_card import EXAMPLE_TEXTS, ModelCard
from tfbert.preprocessing import InGraphTokenizer

TEXTS = ["A wonderful, moving film!", "dull", "", "Ça a l'air génial 😀 北京", " ".join(["long"] * 400)]


@pytest.fixture(scope="module")
def served(export_dir):
    return tf.saved_model.load(str(export_dir)).signatures


def keras_probabilities(classifier, tokenizer, texts):
    """The in-memory model on the training tokenizer's ids."""
    tokens = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="np")
    logits = classifier({name: tf.constant(tokens[name], tf.int32) for name in INPUT_NAMES}, training=False)
    return tf.nn.softmax(logits).numpy()


def test_tf_serving_layout(export_dir):
    assert export_dir.name == "1" and export_dir.parent.name == "sentiment"
    assert export_dir.parent.parent.name == "export"
    assert (export_dir / "saved_model.pb").is_file() and (export_dir / "variables").is_dir()
    assert (export_dir / "model_card.md").is_file()
    assert [path.name for path in export_dir.parent.iterdir()] == ["1"]  # no staging dir left


def test_saved_model_cli_shows_both_signatures(export_dir):
    shown = subprocess.run(
        ["saved_model_cli", "show", "--all", "--dir", str(export_dir)], capture_output=True, text=True, timeout=120
    ).stdout
    signatures = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name", shown, re.S))
    assert "inputs['text'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in signatures["serving_default"]
    for name in INPUT_NAMES:
        assert f"inputs['{name}'] tensor_info:\n        dtype: DT_INT32\n        shape: (-1, -1)" in signatures["serve_ids"]
    for signature in ("serving_default", "serve_ids"):
        outputs = dict(re.findall(r"outputs\['(\w+)'\] tensor_info:\n\s+dtype: (\w+)", signatures[signature]))
        assert outputs == {"logits": "DT_FLOAT", "probabilities": "DT_FLOAT", "label_id": "DT_INT32", "label": "DT_STRING"}


def test_raw_text_signature_matches_the_keras_model(served, classifier, tokenizer):
    outputs = served["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), keras_probabilities(classifier, tokenizer, TEXTS), atol=1e-5)
    label_id = outputs["label_id"].numpy()
    assert label_id.tolist() == outputs["logits"].numpy().argmax(axis=-1).tolist()
    assert outputs["label"].numpy().tolist() == [[b"negative", b"positive"][i] for i in label_id]


def test_id_signature_matches_the_raw_text_signature(served, tokenizer):
    tokens = tokenizer(TEXTS, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="np")
    by_ids = served["serve_ids"](**{name: tf.constant(tokens[name], tf.int32) for name in INPUT_NAMES})
    by_text = served["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(by_ids["logits"].numpy(), by_text["logits"].numpy(), atol=1e-5)


SERVE_WITHOUT_TFBERT = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
serving = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
outputs = serving(text=tf.constant(json.loads(sys.argv[2])))
leaked = sorted(name for name in sys.modules if name.split(".")[0] in ("tfbert", "transformers"))
print(json.dumps({"probabilities": outputs["probabilities"].numpy().tolist(), "leaked": leaked}))
"""


def test_served_in_a_fresh_process_without_tfbert(export_dir, classifier, tokenizer, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TFBERT, str(export_dir), json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={name: value for name, value in os.environ.items() if name != "TF_USE_LEGACY_KERAS"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["leaked"] == []
    expected = keras_probabilities(classifier, tokenizer, TEXTS)
    assert np.abs(np.array(served["probabilities"]) - expected).max() <= 1e-5


def test_model_card_describes_the_model_and_its_rest_api(export_dir, served):
    card = (export_dir / "model_card.md").read_text()
    for fact in ("0 = negative, 1 = positive", "MeanPoolingHead", MINILM, "2 layers, hidden size 32",
                 f"{MAX_LENGTH} tokens", "accuracy 0.7500, f1_macro 0.7000 (24 test examples)", "POST /v1/models/sentiment:predict",
                 "runs as 2 parallel branches", "--tensorflow_intra_op_parallelism=1"):
        assert fact in card
    request, response = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", card, re.S)]
    assert request == {"instances": list(EXAMPLE_TEXTS)}
    outputs = served["serving_default"](text=tf.constant(request["instances"]))
    assert len(response["predictions"]) == len(EXAMPLE_TEXTS)
    for row, prediction in enumerate(response["predictions"]):
        assert set(prediction) == set(outputs)
        assert prediction["label"] == outputs["label"].numpy()[row].decode()
        np.testing.assert_allclose(prediction["probabilities"], outputs["probabilities"].numpy()[row], atol=1e-6)


def test_versions_count_up_and_are_never_overwritten(tmp_path):
    assert Exporter().version_dir(tmp_path, "sentiment") == tmp_path / "export" / "sentiment" / "1"
    for taken in ("1", "3", ".4-staging", "notes"):
        (tmp_path / "export" / "sentiment" / taken).mkdir(parents=True)
    assert Exporter().version_dir(tmp_path, "sentiment").name == "4"
    assert Exporter(version=2).version_dir(tmp_path, "sentiment").name == "2"
    with pytest.raises(FileExistsError, match=r"sentiment/3 already exists; refusing to overwrite version 3"):
        Exporter(version=3).version_dir(tmp_path, "sentiment")
    named = Exporter(export_dir=str(tmp_path / "models"), name="reviews", version=7)
    assert named.version_dir(tmp_path, "sentiment") == tmp_path / "models" / "reviews" / "7"


@pytest.fixture
def module_and_card(classifier, task, tokenizer):
    module = ServingModule(classifier, InGraphTokenizer.from_tokenizer(tokenizer, MAX_LENGTH), task.label_names)
    return module, ModelCard.describe(classifier, task, MINILM)


def test_an_existing_export_is_left_untouched(export_dir, module_and_card):
    stamp = (export_dir / "saved_model.pb").stat().st_mtime_ns
    run_dir = export_dir.parents[2]
    with pytest.raises(FileExistsError, match="sentiment/1 already exists"):
        Exporter(version=1)(*module_and_card, run_dir)
    assert (export_dir / "saved_model.pb").stat().st_mtime_ns == stamp


def test_a_failed_export_leaves_nothing_behind(module_and_card, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        Exporter()(*module_and_card, tmp_path)
    assert list((tmp_path / "export" / "sentiment").iterdir()) == []


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(version=0), "positive integer"),
        (dict(version="2"), "positive integer"),
        (dict(name="a/b"), "plain directory name"),
        (dict(name=".hidden"), "plain directory name"),
        (dict(branches=0), "branches must be a positive integer"),
        (dict(branches=1.5), "branches must be a positive integer"),
    ],
    ids=["version_zero", "version_string", "name_with_slash", "hidden_name", "no_branches", "fractional_branches"],
)
def test_bad_exporter_arguments_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        Exporter(**arguments)


@pytest.mark.parametrize(
    "problem_type, num_outputs, outputs",
    [
        ("single_label", 3, {"logits", "probabilities", "label_id", "label"}),
        ("multi_label", 3, {"logits", "probabilities", "label_id", "label", "predicted"}),
        ("regression", 1, {"logits", "value"}),
    ],
)
def test_outputs_follow_the_problem_type(problem_type, num_outputs, outputs, tiny_backbone, tokenizer):
    model = build_classifier(tiny_backbone, MeanPoolingHead(num_outputs=num_outputs))
    label_names = ["a", "b", "c"][:num_outputs]
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, MAX_LENGTH)
    module = ServingModule(model, in_graph, label_names, problem_type=problem_type, threshold=0.5)
    served = module.serve_text(tf.constant(TEXTS))
    assert set(served) == outputs
    logits = served["logits"].numpy()
    assert logits.shape == (len(TEXTS), num_outputs)
    if problem_type == "regression":
        np.testing.assert_allclose(served["value"].numpy(), logits[:, 0])
        return
    probabilities = served["probabilities"].numpy()
    if problem_type == "single_label":
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    else:
        np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-logits)), rtol=1e-5)
        assert (served["predicted"].numpy() == (probabilities >= 0.5)).all()
    assert served["label"].numpy().tolist() == [label_names[i].encode() for i in logits.argmax(axis=1)]


@pytest.mark.parametrize("problem_type, text_columns", [("regression", ("text",)), ("single_label", ("text", "text_pair"))])
def test_the_model_cards_python_and_predict_lines_fit_the_export(problem_type, text_columns, tiny_backbone, tokenizer,
                                                                   tmp_path):
    """A regression export has no label (its card reads the value); a pair model needs an --input file."""
    from types import SimpleNamespace

    num_outputs = 1 if problem_type == "regression" else 2
    head = MeanPoolingHead(num_outputs=num_outputs, hidden_units=[8], activation="relu")
    model = build_classifier(tiny_backbone, head)
    module = ServingModule(model, InGraphTokenizer.from_tokenizer(tokenizer, MAX_LENGTH), ["a", "b"][:num_outputs],
                           text_columns, problem_type=problem_type)
    task = SimpleNamespace(name="reviews", problem_type=problem_type, label_names=["a", "b"][:num_outputs], max_length=MAX_LENGTH)
    tf.saved_model.save(module, str(tmp_path), signatures=module.signatures())
    loaded = tf.saved_model.load(str(tmp_path))
    card = ModelCard.describe(model, task, MINILM).render(loaded, "reviews")
    python = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    outputs = loaded.signatures["serving_default"].structured_outputs
    assert re.findall(r'outputs\["(\w+)"\]', python) and all(name in outputs for name in re.findall(r'outputs\["(\w+)"\]', python))
    assert "hidden layers [8] with relu" in card
    if problem_type == "regression":
        assert card.startswith("# reviews: reviews regression") and 'outputs["value"]' in python
    else:
        assert "tfbert.predict <this directory> --input pairs.csv` (columns `text` and `text_pair`)" in card


def test_the_export_holds_the_layers_weights_not_gradient_accumulators(tokenizer):
    """A model trained with gradient accumulation also holds its accumulators: they are not
    what serving computes with, and would double the export's size."""
    import tf_keras
    from tests.test_speed_switches import batches, seeded_classifier

    model = seeded_classifier()
    model.grad_accum_steps = 2
    model.compile(tf_keras.optimizers.SGD(0.1), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(batches(2, 2), verbose=0)
    layer_weights = [weight for layer in model.layers for weight in layer.weights]
    assert len(model.weights) > len(layer_weights)  # the accumulators
    module = ServingModule(model, InGraphTokenizer.from_tokenizer(tokenizer, MAX_LENGTH), ["negative", "positive"])
    assert [weight.name for weight in module.weights] == [weight.name for weight in layer_weights]


def test_text_columns_must_be_text_or_a_pair(classifier, tokenizer):
    with pytest.raises(ValueError, match=r"text_columns must be \('text',\) or \('text', 'text_pair'\)"):
        ServingModule(classifier, InGraphTokenizer.from_tokenizer(tokenizer, 8), ["a", "b"], ["sentence"])
    with pytest.raises(ValueError, match=r"problem_type must be one of .* got 'ranking'"):
        ServingModule(classifier, InGraphTokenizer.from_tokenizer(tokenizer, 8), ["a", "b"], problem_type="ranking")


@pytest.fixture(scope="module")
def finished_run(snippets_file, tmp_path_factory):
    """A run dir as tfbert.train.run leaves it: config.yaml, task.json, metrics.json, the best
    checkpoint; its data file has gone since (a re-export reads task.json, not the data)."""
    from hydra.utils import instantiate

    run_dir = tmp_path_factory.mktemp("finished_run")
    cfg = compose_config("model=tiny", "head=mean", f"task.data_file={snippets_file}", f"run_dir={run_dir}")
    (run_dir / "task.json").write_text(json.dumps(instantiate(cfg.task).summary()))
    cfg.task.data_file = str(run_dir / "moved_away.txt")
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    (run_dir / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5, "f1_macro": 0.4, "examples": 24}}))

    model = build_classifier(instantiate(cfg.model), instantiate(cfg.head)(num_outputs=2))
    model.save_weights(str(run_dir / "checkpoints" / "best-0002"))
    (run_dir / "checkpoints" / "best.json").write_text(json.dumps({"checkpoint": "best-0002", "epoch": 2}))
    return run_dir, model


def test_export_cli_rebuilds_the_trained_model(finished_run, tokenizer, capsys):
    run_dir, model = finished_run
    main([f"run_dir={run_dir}", "export.name=from_run", "export.version=3", "export.branches=1"])
    directory = run_dir / "export" / "from_run" / "3"
    assert capsys.readouterr().out.strip() == str(directory)
    texts = ["a wonderful movie", "dull and tedious"]
    tokens = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="np")
    expected = tf.nn.softmax(model({name: tf.constant(tokens[name], tf.int32) for name in INPUT_NAMES})).numpy()
    served = tf.saved_model.load(str(directory)).signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    card = (directory / "model_card.md").read_text()
    assert "accuracy 0.5000" in card and "one chain of ops (exported with branches 1)" in card
    with pytest.raises(SystemExit, match="from_run/3 already exists"):
        main([f"run_dir={run_dir}", "export.name=from_run", "export.version=3"])
    with pytest.raises(SystemExit, match="export.branches must be an integer from 1 to the encoder's 2 attention heads"):
        main([f"run_dir={run_dir}", "export.name=from_run", "export.branches=3"])
    assert sorted(path.name for path in directory.parent.iterdir()) == ["3"]  # nothing half-written
    with pytest.raises(SystemExit, match=r"^tfbert.export: export.version must be a positive integer .*got 0$"):
        main([f"run_dir={run_dir}", "export.version=0"])  # one line, naming the key


def test_export_cli_names_a_model_dir_moved_since_in_one_line(finished_run, tmp_path):
    import shutil

    moved = tmp_path / "run"
    shutil.copytree(finished_run[0], moved)
    config = OmegaConf.load(moved / "config.yaml")
    config.model.name_or_path = "/nowhere/bert"
    OmegaConf.save(config, moved / "config.yaml")
    with pytest.raises(SystemExit) as stopped:
        main([f"run_dir={moved}"])
    assert str(stopped.value).startswith("tfbert.export: model '/nowhere/bert': expected a directory")
    assert "\n" not in str(stopped.value) and "Error in call to target" not in str(stopped.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "run_dir is required"),
        (["run_dir=x", "export.nme=y"], r"unknown keys \['export.nme'\]"),
        (["run_dir=/nowhere"], "run_dir /nowhere does not exist"),
        ("not_a_run", "holds no config.yaml"),
        (["outputs/run"], r"'outputs/run' is not KEY=VALUE; the run dir is given as run_dir=outputs/run"),
        ("no_checkpoint", "best.json does not exist"),
    ],
    ids=["no_run_dir", "misspelt_key", "missing_dir", "not_a_run_dir", "bare_path", "no_checkpoint"],
)
def test_export_cli_errors_name_the_problem(argv, message, tmp_path):
    if argv == "no_checkpoint":
        (tmp_path / "config.yaml").write_text("run_dir: x\n")
    if isinstance(argv, str):
        argv = [f"run_dir={tmp_path}"]
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_export_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m tfbert.export run_dir=")
