"""The run folder: the one place that knows its layout, and writes and reads it.

A run folder written by `python -m keras_adtrs.train`:

```
RUN/
  config.json           what ran: {"settings": TrainConfig fields, "split": ..., "data_set": ..., ...}
  split.json            the file names of the train, validation and test parts
  history.csv           one row per epoch (losses, val_srcc, val_plcc)
  metrics.json          validation and test metrics, best epoch, timings
  test_predictions.csv  file_name, score, prediction of every test image
  test_predictions_by_epoch.csv
                        the test part's scores after every epoch (K-fold runs)
  model.keras           the selected model
  export/               the TF Serving SavedModel (TensorFlow runs)
  logs/                 TensorBoard logs (TensorFlow runs)
  checkpoint/           resume state while the run is unfinished (removed when it ends cleanly)
```

`--splits N` writes `OUTPUT_DIR/protocol.json` and one such folder per split,
`OUTPUT_DIR/split-<k>/`. `--folds K` writes `OUTPUT_DIR/folds.json`,
`OUTPUT_DIR/oof_predictions.csv`, one folder per fold, `OUTPUT_DIR/fold-<k>/`,
and the final model's, `OUTPUT_DIR/final/`. Multi-worker runs give each non-chief worker its
own folder `RUN/<task type>-<task id>/` (its checkpoint).

Example:
>>> run = RunDir.beside("runs/default-20250101-120000/model.keras")  # doctest: +SKIP
>>> run.settings()["dataset"]  # doctest: +SKIP
'default'
"""

import csv
import datetime
import json
import os
import shutil

from keras_adtrs.errors import OutputDirError
from keras_adtrs.reporting import write_json

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.csv"
EPOCH_PREDICTIONS_FILE = "test_predictions_by_epoch.csv"
FOLDS_FILE = "folds.json"
OOF_FILE = "oof_predictions.csv"
MODEL_FILE = "model.keras"
PROTOCOL_FILE = "protocol.json"
EXPORT_DIR = "export"
LOGS_DIR = "logs"
CHECKPOINT_DIR = "checkpoint"


def default_path(dataset, now=None):
    """`runs/<dataset>-<timestamp>`, the default run folder (relative to the working folder)."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{dataset}-{stamp}")


class RunDir:
    """One run folder: its paths, and every file the run writes and reads.

    Args:
        path: str or path. The folder (it need not exist yet).
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunDir({self.path!r})"

    @classmethod
    def beside(cls, model_path):
        """The run folder holding `model_path` (a run's `model.keras`)."""
        return cls(os.path.dirname(os.path.abspath(os.fspath(model_path))))

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def config_path(self):
        return self.file(CONFIG_FILE)

    @property
    def split_path(self):
        return self.file(SPLIT_FILE)

    @property
    def history_path(self):
        return self.file(HISTORY_FILE)

    @property
    def metrics_path(self):
        return self.file(METRICS_FILE)

    @property
    def predictions_path(self):
        return self.file(PREDICTIONS_FILE)

    @property
    def epoch_predictions_path(self):
        return self.file(EPOCH_PREDICTIONS_FILE)

    @property
    def folds_path(self):
        return self.file(FOLDS_FILE)

    @property
    def oof_path(self):
        return self.file(OOF_FILE)

    @property
    def model_path(self):
        return self.file(MODEL_FILE)

    @property
    def protocol_path(self):
        return self.file(PROTOCOL_FILE)

    @property
    def export_dir(self):
        return self.file(EXPORT_DIR)

    @property
    def logs_dir(self):
        return self.file(LOGS_DIR)

    @property
    def checkpoint_dir(self):
        return self.file(CHECKPOINT_DIR)

    def child(self, name):
        """A run folder inside this one (`split-<k>` of a protocol, a worker's folder)."""
        return RunDir(self.file(name))

    # ------------------------------------------------------------- folder
    def check_writable(self):
        """Creates the folder and proves it writable, before any training starts.

        Raises:
            OutputDirError: the folder cannot be created or written (the message names it).
        """
        try:
            os.makedirs(self.path, exist_ok=True)
            probe = self.file(f".write-test-{os.getpid()}")
            with open(probe, "w") as handle:
                handle.write("ok")
            os.remove(probe)
        except OSError as exc:
            raise OutputDirError(f"output directory {self.path!r} is not writable: {exc.strerror or exc}") from None

    def remove_checkpoint(self):
        """Removes `checkpoint/` (what a run does when it ends cleanly); returns whether it existed."""
        if not os.path.isdir(self.checkpoint_dir):
            return False
        shutil.rmtree(self.checkpoint_dir)
        return True

    # -------------------------------------------------------- config.json
    def write_config(self, record):
        """Writes `config.json` (see `keras_adtrs.training.run.run_record`)."""
        write_json(self.config_path, record)

    def read_config(self):
        """`config.json` as a dict, or None when there is none.

        Raises:
            ValueError: the file is not JSON, or not a JSON object (the message names it).
        """
        if not os.path.isfile(self.config_path):
            return None
        try:
            with open(self.config_path, encoding="utf-8") as handle:
                record = json.load(handle)
        except ValueError as exc:
            raise ValueError(f"{self.config_path}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{self.config_path}: expected a JSON object, found {type(record).__name__}")
        return record

    def settings(self):
        """The run's settings (`TrainConfig` fields) from `config.json`; `{}` when there is none."""
        record = self.read_config() or {}
        settings = record.get("settings")
        return settings if isinstance(settings, dict) else {}

    def split_settings(self):
        """The split's seed and fractions from `config.json` (`{}` when there is none)."""
        record = self.read_config() or {}
        split = record.get("split")
        return split if isinstance(split, dict) else {}

    # ---------------------------------------------------------- split.json
    def write_split(self, split, names):
        """Writes `split.json`: the file names of each part of a `Split`."""
        write_json(self.split_path, split.to_json(names))

    def read_split(self):
        """`split.json` as `{"train": [...], "validation": [...], "test": [...]}`."""
        with open(self.split_path, encoding="utf-8") as handle:
            return json.load(handle)

    # ---------------------------------------------------------- history.csv
    def write_history(self, rows):
        """`history.csv` as `keras.callbacks.CSVLogger` writes it, from epoch rows (dicts with `epoch`).

        No rows removes the file (a run that has not finished an epoch).
        """
        if not rows:
            if os.path.exists(self.history_path):
                os.remove(self.history_path)
            return
        keys = sorted(k for k in rows[0] if k != "epoch")
        tmp = self.history_path + ".tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["epoch"] + keys, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({"epoch": row["epoch"], **{k: row.get(k, "NA") for k in keys}})
        os.replace(tmp, self.history_path)

    def read_history(self):
        """`history.csv` as a list of dicts of str (`[]` when there is none)."""
        if not os.path.isfile(self.history_path):
            return []
        with open(self.history_path, newline="") as handle:
            return list(csv.DictReader(handle))

    # ------------------------------------------------- metrics, predictions
    def write_metrics(self, results):
        write_json(self.metrics_path, results)

    def read_metrics(self):
        with open(self.metrics_path, encoding="utf-8") as handle:
            return json.load(handle)

    def write_predictions(self, names, labels, predictions):
        """Writes `test_predictions.csv`: `file_name, score, prediction` per test image."""
        with open(self.predictions_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "score", "prediction"])
            for name, label, prediction in zip(names, labels, predictions):
                writer.writerow([name, f"{label:.6g}", f"{prediction:.6g}"])

    def write_protocol(self, protocol):
        write_json(self.protocol_path, protocol)

    def write_epoch_predictions(self, names, labels, by_epoch):
        """Adds columns to `test_predictions_by_epoch.csv`: `file_name, score, epoch_1, epoch_2, ...`.

        Args:
            names, labels: the test part's file names and human scores.
            by_epoch: dict 0-based epoch -> array of predictions; columns of
                epochs already in the file are kept (a resumed run).
        """
        columns = {int(k): [f"{v:.6g}" for v in values] for k, values in self.read_epoch_predictions().items()}
        columns.update({int(k): [f"{v:.6g}" for v in values] for k, values in by_epoch.items()})
        tmp = self.epoch_predictions_path + ".tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "score"] + [f"epoch_{e + 1}" for e in sorted(columns)])
            for i, (name, label) in enumerate(zip(names, labels)):
                writer.writerow([name, f"{label:.6g}"] + [columns[e][i] for e in sorted(columns)])
        os.replace(tmp, self.epoch_predictions_path)

    def read_epoch_predictions(self):
        """`test_predictions_by_epoch.csv` as dict 0-based epoch -> float array (`{}` when there is none)."""
        if not os.path.isfile(self.epoch_predictions_path):
            return {}
        with open(self.epoch_predictions_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            return {}
        epochs = [k for k in rows[0] if k.startswith("epoch_")]
        return {int(k.split("_")[1]) - 1: [float(r[k]) for r in rows] for k in epochs}

    def read_predictions(self):
        """`test_predictions.csv` as `(names, labels, predictions)` lists."""
        with open(self.predictions_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return ([r["file_name"] for r in rows], [float(r["score"]) for r in rows],
                [float(r["prediction"]) for r in rows])
