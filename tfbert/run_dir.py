"""What a run dir may already hold when a run starts there.

A run trains in an empty dir, or resumes the unfinished run whose backup (backup/) the
dir holds, with the settings that run started with (its config.yaml). Anything else
would mix two runs' files: RunDirInUse, before the new run writes anything. RunDirCheck
does the same check for Hydra before Hydra records the launch in the dir's .hydra/.
"""

import copy
import json
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from tfbert.checkpoints import latest_backup


class RunDirInUse(FileExistsError):
    """The run_dir holds what a new run would mix with; the message says what and what to do."""


# Settings a resumed run may change: where the run dir is (it may have moved), and whether
# to resume (a run started with resume=never continues with resume=auto).
NOT_RESUMED_SETTINGS = ("run_dir", "trainer.resume")


def check_run_dir(run_dir: Path, backup_dir: Path, resume: str, cfg: DictConfig | None = None) -> None:
    """RunDirInUse where a run in `run_dir` would mix with another run: an unfinished run's
    backup (in `backup_dir`) with `resume` never, or resumed by a run whose `cfg` differs from
    the config.yaml it started with (but for NOT_RESUMED_SETTINGS); a finished run's best
    checkpoint (its best value would stand for this run's, and its weights be restored if
    no epoch beat it). Cheap: a caller can check before any work."""
    run_dir, backup_dir = Path(run_dir), Path(backup_dir)
    if latest_backup(backup_dir):
        if resume == "never":
            raise RunDirInUse(
                f"{backup_dir} holds an unfinished run; use trainer.resume=auto to continue it, "
                "or another run dir (hydra.run.dir=..., or run_dir=... where the command sets it) to start over"
            )
        if cfg is not None and (run_dir / "config.yaml").is_file():
            check_resumed_settings(OmegaConf.load(run_dir / "config.yaml"), cfg, backup_dir)
        return
    best = run_dir / "checkpoints" / "best.json"
    if best.is_file():
        raise RunDirInUse(
            f"{run_dir} holds a finished run ({best}, and no backup to resume): choose another run dir "
            f"(hydra.run.dir=..., or run_dir=... where the command sets it) to train; `python -m tfbert.export run_dir={run_dir}` exports that run again"
        )


def check_resumed_settings(started: DictConfig, now: DictConfig, backup_dir: Path) -> None:
    """RunDirInUse unless a run resuming from `backup_dir` has the settings it `started` with
    (NOT_RESUMED_SETTINGS aside): a backup holds the model, optimizer and data position those
    settings made."""

    def differences(before, after, key=""):
        if key in NOT_RESUMED_SETTINGS:
            return []
        if isinstance(before, dict) and isinstance(after, dict):
            return [line for name in sorted(before.keys() | after.keys())
                    for line in differences(before.get(name), after.get(name), f"{key}.{name}".lstrip("."))]
        return [] if before == after else [f"{key} ({before!r} then, {after!r} now)"]

    changed = differences(OmegaConf.to_container(started, resolve=True), OmegaConf.to_container(now, resolve=True))
    if changed:
        raise RunDirInUse(
            f"{backup_dir} holds an unfinished run with other settings: {'; '.join(changed)}. Rerun with the "
            "settings it started with to resume it, or train in another run dir (hydra.run.dir=..., or run_dir=... where the command sets it)"
        )


def check_resumed_data(task_file: Path, backup_dir: Path, summary: dict) -> None:
    """RunDirInUse unless a run resuming from `backup_dir` reads the data it started with:
    its task.json (`task_file`), which this run's task `summary` would replace, and the
    summary agree (sizes, labels, the splits' content hashes; not where the data was read
    from, the settings' concern: a cache path may differ); the backup's place in the
    data (epoch, batch) would fall elsewhere in other data."""
    if not latest_backup(backup_dir) or not Path(task_file).is_file():
        return
    started = json.loads(Path(task_file).read_text())
    now = json.loads(json.dumps(summary))  # as task.json holds it (class ids as strings)
    # Not provenance: its paths (a cache dir on another machine) may differ for the same data.
    changed = [f"{key} ({started[key]!r} then, {now[key]!r} now)" for key in now
               if key in started and key not in ("fingerprints", "provenance") and started[key] != now[key]]
    hashes = started.get("fingerprints", {})
    changed += [f"the content of the {split} split" for split, fingerprint in now["fingerprints"].items()
                if split in hashes and hashes[split] != fingerprint]
    if changed:
        raise RunDirInUse(
            f"{backup_dir} holds an unfinished run on other data: {'; '.join(changed)}. Give it the data it "
            "started with to resume it, or train in another run dir (hydra.run.dir=..., or run_dir=... where the command sets it)"
        )


class RunDirCheck(Callback):
    """Hydra callback (conf/config.yaml `hydra.callbacks`): check_run_dir on `hydra.run.dir`
    before Hydra writes the launch's record there (.hydra/: config and overrides, which
    tfbert.compare reads), so a refused run leaves the run in that dir as it was. Single runs
    only: in a sweep Hydra records each job before run() can check its dir."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # as Hydra does next: hydra.run.dir may use ${hydra:...}
        hydra_dir = os.path.abspath(config.hydra.run.dir)  # what hydra:runtime.output_dir becomes
        if not Path(hydra_dir).is_dir():
            return  # a new dir holds no run
        cfg = copy.deepcopy(config)
        with open_dict(cfg):
            del cfg["hydra"]
            if OmegaConf.is_interpolation(config, "run_dir"):  # the default: the run's dir is Hydra's
                cfg.run_dir = hydra_dir
        try:
            check_run_dir(Path(hydra_dir), Path(hydra_dir) / "backup", cfg.trainer.get("resume"), cfg)
        except RunDirInUse as error:
            raise SystemExit(f"tfbert: {error}") from None
