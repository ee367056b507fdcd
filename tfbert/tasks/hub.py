"""task=hub: any labelled dataset on the Hugging Face hub (needs network access)."""

import datasets

from tfbert.tasks.labeled import build_task
from tfbert.tasks.task_data import TaskData


def load_hub(
    path: str,
    name: str | None = None,
    train_split: str = "train",
    validation_split: str | None = "validation",
    test_split: str | None = "test",
    task_name: str | None = None,
    **columns_and_options,
) -> TaskData:
    """A task from `datasets.load_dataset(path, name)`.

    Args:
        path, name: the dataset and its configuration, e.g. `glue`, `sst2`.
        train_split, validation_split, test_split: which hub splits to use; None carves
            that split from train (GLUE's test labels are hidden, so its ready configs
            test on `validation` and carve validation from train).
        task_name: the task's name (the export's directory); default `<path>-<name>`, each
            `/` of a namespaced path a `-` (`stanfordnlp-imdb`).
        columns_and_options: the arguments of `tfbert.tasks.labeled.build_task`.
    """
    wanted = {"train": train_split, "validation": validation_split, "test": test_split}
    label = f"{path}/{name}" if name else path
    try:
        raw = {ours: datasets.load_dataset(path, name, split=theirs) for ours, theirs in wanted.items() if theirs}
    except ConnectionError as error:
        raise ConnectionError(
            f"{error}. The hub dataset {label} is downloaded on first use and read from the datasets cache "
            "after that; where the hub is out of reach, save its splits as files and use task=files"
        ) from None
    sources = {ours: f"{label} [{wanted[ours]}]" for ours in raw}
    return build_task(task_name or label.replace("/", "-"), raw, sources, **columns_and_options)
