"""Version guard: the one set of packages tfbert works with, checked before any work.

TFBertModel exists only in transformers 4.x and is a tf-keras (Keras 2) model;
tensorflow-text ships kernels built for one TensorFlow minor version.
"""

from importlib import metadata


class IncompatibleEnvironment(RuntimeError):
    """The installed packages cannot run tfbert; the message says what to install."""


def installed_versions() -> dict[str, str | None]:
    """Versions of the packages the guard checks, None where one is missing."""
    names = ("tensorflow", "tf-keras", "keras", "tensorflow-text", "transformers")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check_environment(versions: dict[str, str | None] | None = None) -> None:
    """Raise IncompatibleEnvironment, in one sentence, if the stack cannot work."""
    versions = installed_versions() if versions is None else versions
    tf_version = versions.get("tensorflow")
    if tf_version is None:
        raise IncompatibleEnvironment(
            "TensorFlow is not installed: run `pip install -e .` in the tfbert checkout."
        )
    tf_minor = ".".join(map(str, _major_minor(tf_version)))

    transformers = versions.get("transformers")
    if transformers is None or _major_minor(transformers)[0] >= 5:
        found = f"transformers {transformers}" if transformers else "no transformers"
        raise IncompatibleEnvironment(
            f"Found {found}, but TFBertModel exists only in transformers 4.x: "
            "run `pip install 'transformers>=4.57,<5'`."
        )

    tf_keras = versions.get("tf-keras")
    if tf_keras is None:
        keras = versions.get("keras")
        found = f"Keras {keras}" if keras else "no Keras"
        raise IncompatibleEnvironment(
            f"Found {found} without tf-keras, but TFBertModel needs Keras 2: "
            f"run `pip install 'tf-keras=={tf_minor}.*'`."
        )
    if _major_minor(tf_keras) != _major_minor(tf_version):
        raise IncompatibleEnvironment(
            f"tf-keras {tf_keras} does not match TensorFlow {tf_version}: "
            f"run `pip install 'tf-keras=={tf_minor}.*'`."
        )

    tf_text = versions.get("tensorflow-text")
    if tf_text is None or _major_minor(tf_text) != _major_minor(tf_version):
        found = f"tensorflow-text {tf_text}" if tf_text else "no tensorflow-text"
        raise IncompatibleEnvironment(
            f"Found {found}, but TensorFlow {tf_version} needs the same minor version: "
            f"run `pip install 'tensorflow-text=={tf_minor}.*'`."
        )
