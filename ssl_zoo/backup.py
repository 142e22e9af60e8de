"""Resumable training: a backup of the whole training state every N steps.

`TrainingBackup` is the callback `train_and_evaluate` uses with a `model_dir`. Unlike
Keras' `BackupAndRestore` it

- writes every file atomically: the weights (model, optimizer state, random-generator
  states) go to a new `step-<k>.weights.h5`, and only then does `state.json` point to
  it, so a process killed at any instant leaves the previous consistent backup;
- records the position inside the epoch (`batch`), so a run killed mid-epoch resumes
  at the step after its last backup instead of at the start of the epoch (the trainer
  skips the batches already consumed, see `resume_plan`);
- never deletes itself when `fit` returns (the trainer removes it once the trained
  model is safely on disk).

Example:
>>> import tempfile, numpy as np, keras
>>> d = tempfile.mkdtemp()
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> cb = TrainingBackup(d, steps_per_epoch=4, save_freq=3)
>>> _ = model.fit(np.ones((16, 2)), np.ones(16), batch_size=4, epochs=1, verbose=0,
...               callbacks=[cb])
>>> state = read_backup_state(d)
>>> state["epoch"], state["batch"], state["step"]
(1, 0, 4)
"""

import glob
import json
import os

import keras

from ssl_zoo.utils.io import atomic_path, atomic_write_json

STATE_FILE = "state.json"


class BackupMismatchError(ValueError):
    """A backup was written by a run with other steps per epoch or epochs."""


def read_backup_state(directory):
    """The backup state in `directory`: {'epoch', 'batch', 'step', 'steps_per_epoch',
    'weights'} (`weights` an absolute path), or None when there is no backup.

    `epoch` epochs and then `batch` batches of the next one were trained (`step` =
    epoch * steps_per_epoch + batch optimizer steps).
    """
    path = directory and os.path.join(directory, STATE_FILE)
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    state["weights"] = os.path.join(directory, state["weights"])
    if not os.path.exists(state["weights"]):
        raise FileNotFoundError(
            f"{path} names {state['weights']}, which is missing: the backup was "
            f"damaged outside ssl_zoo; delete {directory} to train from scratch.")
    return state


def restore_backup(model, directory, steps_per_epoch):
    """Loads the backup of `directory` into the compiled `model` (weights, optimizer
    state and step counter, random-generator states).

    Returns:
        (epoch, batch): where training stands, as in `read_backup_state`; (0, 0)
        without a backup.

    Raises:
        BackupMismatchError: the backup was made with another `steps_per_epoch`.
    """
    state = read_backup_state(directory)
    if state is None:
        return 0, 0
    if int(state["steps_per_epoch"]) != int(steps_per_epoch):
        raise BackupMismatchError(
            f"the backup in {directory} was written with {state['steps_per_epoch']} "
            f"steps per epoch and this run has {steps_per_epoch}: resume with the same "
            f"settings, or use another model_dir.")
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(state["weights"])
    return int(state["epoch"]), int(state["batch"])


def resume_plan(epoch, batch, epochs, steps_per_epoch):
    """The `fit` calls that finish a run standing at (`epoch`, `batch`).

    Returns:
        A list of dicts {'initial_epoch', 'epochs', 'steps_per_epoch', 'skip',
        'batch_offset'}: first the rest of a partly trained epoch (when `batch` > 0),
        then the remaining whole epochs. `skip` is the number of batches of the
        training stream consumed before that call starts.

    Example:
    >>> [tuple(p.values()) for p in resume_plan(1, 3, epochs=3, steps_per_epoch=10)]
    [(1, 2, 7, 13, 3), (2, 3, 10, 20, 0)]
    """
    plan = []
    if batch:
        plan.append({"initial_epoch": epoch, "epochs": epoch + 1,
                     "steps_per_epoch": steps_per_epoch - batch,
                     "skip": epoch * steps_per_epoch + batch, "batch_offset": batch})
        epoch += 1
    if epoch < epochs:
        plan.append({"initial_epoch": epoch, "epochs": epochs,
                     "steps_per_epoch": steps_per_epoch,
                     "skip": epoch * steps_per_epoch, "batch_offset": 0})
    return plan


class TrainingBackup(keras.callbacks.Callback):
    """Backs up the training state every `save_freq` steps and at every epoch end.

    Args:
        directory: where the backup lives (created on the first save).
        steps_per_epoch: the run's steps per epoch (recorded, checked on resume).
        save_freq: "epoch", or an int N: also back up whenever the step count is a
            multiple of N (a killed run then loses fewer than N steps).
        batch_offset: batches of the first epoch trained before this `fit` call
            (when it finishes a partly trained epoch, see `resume_plan`).

    Example:
    >>> TrainingBackup("/tmp/run/backup", steps_per_epoch=100, save_freq=25).save_freq
    25
    """

    def __init__(self, directory, steps_per_epoch, save_freq="epoch", batch_offset=0):
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int)
                                         and not isinstance(save_freq, bool)
                                         and save_freq >= 1):
            raise ValueError(f"save_freq must be 'epoch' or an int >= 1 (steps), got "
                             f"{save_freq!r}.")
        self.directory = os.fspath(directory)
        self.steps_per_epoch = int(steps_per_epoch)
        self.save_freq = save_freq
        self.batch_offset = int(batch_offset)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        position = self.batch_offset + batch + 1
        step = self._epoch * self.steps_per_epoch + position
        # At every multiple of save_freq steps; the last batch of an epoch is backed up
        # by on_epoch_end.
        if step % self.save_freq == 0 and position < self.steps_per_epoch:
            self.save(self._epoch, position)

    def on_epoch_end(self, epoch, logs=None):
        self.batch_offset = 0
        self.save(epoch + 1, 0)

    def save(self, epoch, batch):
        """Writes the backup of `epoch` whole epochs plus `batch` batches."""
        step = epoch * self.steps_per_epoch + batch
        name = f"step-{step:010d}.weights.h5"
        os.makedirs(self.directory, exist_ok=True)
        with atomic_path(os.path.join(self.directory, name)) as tmp:
            self.model.save_weights(tmp)
        atomic_write_json(os.path.join(self.directory, STATE_FILE), {
            "epoch": epoch, "batch": batch, "step": step,
            "steps_per_epoch": self.steps_per_epoch, "weights": name})
        for old in glob.glob(os.path.join(self.directory, "step-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)


# What a run directory needs to resume (or, once trained, to be evaluated) elsewhere;
# checkpoint.keras, TensorBoard logs and locks are left behind.
RUN_FILES = ("history.json", "evaluations.json", "trained.keras", "trained.json")


class RunArchiveError(ValueError):
    """A run archive that cannot be packed or unpacked (named reason)."""


def _run_members(model_dir):
    """{path inside the archive: path on disk} of what resumes the run of `model_dir`."""
    members = {}
    backup = os.path.join(model_dir, "backup")
    state = read_backup_state(backup)
    if state is not None:
        members["backup/" + STATE_FILE] = os.path.join(backup, STATE_FILE)
        members["backup/" + os.path.basename(state["weights"])] = state["weights"]
    for name in RUN_FILES:
        if os.path.exists(os.path.join(model_dir, name)):
            members[name] = os.path.join(model_dir, name)
    if state is None and "trained.keras" not in members:
        raise RunArchiveError(f"{model_dir} holds neither a step backup nor a trained "
                              f"model: nothing to pack.")
    return members


def pack_run(model_dir, archive):
    """Packs an unfinished (or trained) run into one .tar.gz that resumes elsewhere.

    A `model_dir` is scratch space on one machine. The archive holds what the same
    training command needs to go on from where the run stands on another machine or
    in a later session: the step backup (`backup/state.json` and the weights file it
    names: model, optimizer and random-generator states), the per-epoch history and
    the periodic evaluations, or the trained model of a run that finished. The run's
    lock is held while packing, so a live run is refused instead of copied mid-write;
    the archive is written atomically.

    Args:
        model_dir: the run's `--model_dir` (per method for the benchmark scripts).
        archive: the .tar.gz to write.

    Returns:
        {'step': optimizer steps of the backup (None for a trained run), 'files': the
        archive's members, 'bytes': the archive's size}.

    Raises:
        RunArchiveError: nothing to pack. DirectoryInUseError: a run holds the lock.

    Example:
    >>> import tempfile, numpy as np, keras
    >>> run, other, carry = tempfile.mkdtemp(), tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> _ = model.fit(np.ones((16, 2)), np.ones(16), batch_size=4, epochs=1, verbose=0,
    ...               callbacks=[TrainingBackup(os.path.join(run, "backup"), 4, 3)])
    >>> pack_run(run, os.path.join(carry, "run.tar.gz"))["files"]
    ['backup/state.json', 'backup/step-0000000004.weights.h5']
    >>> unpack_run(os.path.join(carry, "run.tar.gz"), other)["step"]
    4
    >>> read_backup_state(os.path.join(other, "backup"))["step"]
    4
    """
    import tarfile
    from ssl_zoo.utils.io import directory_lock
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise RunArchiveError(f"no run directory at {model_dir}.")
    with directory_lock(model_dir):
        members = _run_members(model_dir)
        state = read_backup_state(os.path.join(model_dir, "backup"))
        os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)
        with atomic_path(archive) as tmp:
            with tarfile.open(tmp, "w:gz") as tar:
                for name, path in members.items():
                    tar.add(os.path.realpath(path), arcname=name, recursive=False)
    return {"step": None if state is None else int(state["step"]),
            "files": list(members), "bytes": os.path.getsize(archive)}


# A run's outputs besides RUN_FILES: an unpack with overwrite removes them too, so
# nothing of the replaced run is read as the new one's.
_RUN_OUTPUTS = ("checkpoint.keras", "model.keras", "metrics.json")


def _read_archive(archive, scratch):
    """Extracts the members of a run archive into `scratch` (fsync'ed); their names.

    Only the files of a run directory are accepted, as regular files: no other path,
    no link, nothing outside the run directory.
    """
    import shutil
    import tarfile
    import zlib
    allowed = set(RUN_FILES) | {"backup/" + STATE_FILE}
    names = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            infos = tar.getmembers()
            for info in infos:
                ok = info.name in allowed or (
                    info.name.startswith("backup/step-")
                    and info.name.endswith(".weights.h5") and "/" not in info.name[7:])
                if not ok or not info.isfile():
                    raise RunArchiveError(f"{archive} holds {info.name!r}, which is not "
                                          f"a file of a run directory: refused.")
            for info in infos:
                target = os.path.join(scratch, info.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with tar.extractfile(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                    dst.flush()
                    os.fsync(dst.fileno())
                names.append(info.name)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise RunArchiveError(f"{archive} is not a readable run archive: {e}") from e
    return names


def _check_run_archive(archive, scratch, names):
    """A named error unless the extracted files make a run: a backup whose state names
    a weights file of the archive, or a trained model with its record."""
    if "backup/" + STATE_FILE in names:
        try:
            with open(os.path.join(scratch, "backup", STATE_FILE), encoding="utf-8") as f:
                state = json.load(f)
            weights = "backup/" + state["weights"]
            for key in ("step", "epoch", "batch", "steps_per_epoch"):
                int(state[key])
        except (ValueError, KeyError, TypeError) as e:
            raise RunArchiveError(f"{archive}: its backup/{STATE_FILE} is damaged "
                                  f"({e!r}).") from e
        if weights not in names:
            raise RunArchiveError(f"{archive}: its backup/{STATE_FILE} names {weights}, "
                                  f"which the archive does not hold.")
    elif not {"trained.keras", "trained.json"} <= set(names):
        raise RunArchiveError(f"{archive} holds neither a step backup nor a trained model "
                              f"with its trained.json: not a run archive.")


def unpack_run(archive, model_dir, overwrite=False):
    """Unpacks a `pack_run` archive into `model_dir`; the run's training command then
    resumes from its backup (or evaluates its trained model, when the command's
    settings are those it was trained with, data path included).

    The archive is read and checked in a scratch folder inside `model_dir` before
    anything of `model_dir` changes; the weights move into place before the state
    that names them, so an interrupted unpack never leaves a state without weights.

    Args:
        archive: a .tar.gz written by `pack_run`.
        model_dir: the run directory to fill (created if missing).
        overwrite: replace a run already in `model_dir` (refused by default: it may be
            further along than the archive); its backup, history, evaluations and
            models are removed.

    Returns:
        {'step': the backup's optimizer steps (None for a trained run), 'files'}.

    Raises:
        RunArchiveError: a missing, unreadable or incomplete archive, a member that is
            not a file of a run directory, or a run directory that already holds a
            run. DirectoryInUseError: a run holds the lock.
    """
    import shutil
    import tempfile
    from ssl_zoo.utils.io import directory_lock
    archive, model_dir = os.fspath(archive), os.fspath(model_dir)
    if not os.path.isfile(archive):
        raise RunArchiveError(f"no run archive at {archive}.")
    with directory_lock(model_dir):
        if not overwrite:
            present = [n for n in ("backup/" + STATE_FILE, "trained.keras")
                       if os.path.exists(os.path.join(model_dir, n))]
            if present:
                raise RunArchiveError(
                    f"{model_dir} already holds a run ({', '.join(present)}); it may be "
                    f"further along than {archive}: pass overwrite=True (--overwrite) or "
                    f"another directory.")
        for stale in glob.glob(os.path.join(model_dir, ".unpack-*")):  # a killed unpack's
            shutil.rmtree(stale, ignore_errors=True)
        scratch = tempfile.mkdtemp(dir=model_dir, prefix=".unpack-")
        try:
            names = _read_archive(archive, os.path.join(scratch, "new"))
            _check_run_archive(archive, os.path.join(scratch, "new"), names)
            if overwrite:   # the replaced run moves aside, into the scratch folder
                os.makedirs(os.path.join(scratch, "old"))
                for name in ("backup",) + RUN_FILES + _RUN_OUTPUTS:
                    if os.path.exists(os.path.join(model_dir, name)):
                        os.replace(os.path.join(model_dir, name),
                                   os.path.join(scratch, "old", name))
            for name in sorted(names, key=lambda n: n.endswith(STATE_FILE)):
                target = os.path.join(model_dir, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(scratch, "new", name), target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    state = read_backup_state(os.path.join(model_dir, "backup"))
    return {"step": None if state is None else int(state["step"]), "files": names}
