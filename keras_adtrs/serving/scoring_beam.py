"""Score millions of images with Apache Beam (Beam-only module: the `beam` extra).

`python -m keras_adtrs.predict --engine beam PATTERN... --model M --output
PREFIX` runs `run_scoring` on the DirectRunner, every local core a worker;
`--runner` and Beam's own pipeline options (`--project`, `--region`,
`--temp_location`, `--flink_master`, ...) pass through to Dataflow, Flink or
Spark. The pipeline:

1. **Inputs**: file patterns, folders (searched recursively for the image
   extensions `predict` takes) and text files listing one path per line
   (`--paths-from`), read through Beam's filesystems, so `gs://` and `s3://`
   work where their Beam extras are installed. Every path is kept once.
   `--skip-scored PREFIX` leaves out the paths already in `PREFIX-scores-*`
   (a run that was killed goes on where it stopped).
2. **Decode and crop**: `keras_adtrs.data.images` and
   `keras_adtrs.data.image_crops`, unchanged: the deterministic crop grid of
   `keras_adtrs.score` and the `predict` command. A file they cannot read goes
   to the error output with the reason `predict` prints; the others go on.
3. **RunInference** with `CropModelHandler`: the model (a `.keras` file, or a
   SavedModel of `python -m keras_adtrs.export`) is loaded once per worker;
   batches of images have their crops scored together by the package's one
   scoring loop (`keras_adtrs.models.scoring.score_crop_sets`), and each
   image's score is the mean of its crops.
4. **Outputs**: `PREFIX-scores-*` rows (`path`, `score`, `crops`, `model`)
   and `PREFIX-errors-*` rows (`path`, `kind`, `reason`), as CSV (default),
   Parquet or JSON Lines. Shards are written as the rows come (every
   `rows_per_shard` rows and at each bundle's end, each file written aside
   and renamed), so a killed run keeps what it scored.

Beam metrics (namespace `keras_adtrs`): `images_scored`, `crops_scored`,
`failures_<kind>`, and `inference_ms` (a distribution); `run_scoring`
returns them with the crops per second of the model calls.

Example:
>>> run_scoring(ScoringJob(patterns=["photos/"], model="model.keras", output="out/photos"))  # doctest: +SKIP
"""

import csv
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
import uuid
import zipfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from keras_adtrs.data.image_crops import image_crops
from keras_adtrs.data.images import IMAGE_EXTENSIONS, ImageReadError, decode_image, expand_paths, load_image
from keras_adtrs.defaults import PRECISION_CHOICES, SCORE_BATCH_SIZE, TEST_CROPS
from keras_adtrs.errors import SettingError
from keras_adtrs.reporting import score_value
from keras_adtrs.serving.signatures import METADATA_FILE

NAMESPACE = "keras_adtrs"
OUTPUT_FORMATS = ("csv", "parquet", "jsonl")
EXTENSIONS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
SCORE_FIELDS = ("path", "score", "crops", "model")
ERROR_FIELDS = ("path", "kind", "reason")


@dataclasses.dataclass
class ScoringJob:
    """What a batch scoring run does.

    Attributes:
        patterns: list of str. File patterns, folders or files.
        model: str. A `.keras` file or a SavedModel folder (`.../adtrs/1`).
        output: str. The output prefix: shards are `OUTPUT-scores-*` and
            `OUTPUT-errors-*`.
        path_lists: list of str. Text files with one path per line.
        output_format: str. `csv`, `parquet` or `jsonl`.
        crops: int. Grid crops per image.
        batch_size: int. Crops per model call.
        skip_scored: str or None. An output prefix whose scored paths are
            left out.
        rows_per_shard: int. Rows per output shard (at most).
        images_per_batch: tuple of int. `(min, max)` images per inference
            batch (`RunInference`'s batching).
        threads_per_worker: int or None. TensorFlow's intra-op threads in
            each worker (the DirectRunner's default: the cores shared among
            its workers, so that they do not oversubscribe the machine);
            None leaves TensorFlow's own choice.
        precision: str or None. The precision a `.keras` model scores in
            (None: `keras_adtrs.defaults.SCORING_PRECISION`, as the predict
            command). A SavedModel scores in the precision it was exported
            in: giving one with it raises `SettingError`.
    """

    patterns: list
    model: str
    output: str
    path_lists: list = dataclasses.field(default_factory=list)
    output_format: str = "csv"
    crops: int = TEST_CROPS
    batch_size: int = SCORE_BATCH_SIZE
    skip_scored: str = None
    rows_per_shard: int = 1000
    images_per_batch: tuple = (1, 16)
    threads_per_worker: int = None
    precision: str = None

    def check(self):
        """Raises `SettingError` for a setting out of range."""
        if self.output_format not in OUTPUT_FORMATS:
            raise SettingError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}, "
                               f"got {self.output_format!r}")
        for name, low in (("crops", 1), ("batch_size", 1), ("rows_per_shard", 1)):
            if getattr(self, name) < low:
                raise SettingError(name, f"must be at least {low}, got {getattr(self, name)}")
        if not self.patterns and not self.path_lists:
            raise SettingError("patterns", "none given: pass file patterns, folders or a list of paths")
        if self.precision is not None:
            if self.precision not in PRECISION_CHOICES:
                raise SettingError("precision", f"must be one of {', '.join(PRECISION_CHOICES)}, "
                                   f"got {self.precision!r}")
            if not self.model.endswith(".keras"):
                raise SettingError("precision", f"applies to .keras models; {self.model} scores in the precision "
                                   "it was exported in")
        return self


# ------------------------------------------------------------------ the workers
_CONFIGURED = []


def configure_worker(threads):
    """Once per worker process: TensorFlow's intra-op threads (on the TensorFlow backend), before its first op."""
    if _CONFIGURED or not threads:
        return
    _CONFIGURED.append(threads)
    from keras_adtrs.data.backend import uses_tensorflow

    if uses_tensorflow():
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already ran an op in this process: its pools stay
            pass


# ------------------------------------------------------------------ the model
def _local_copy(path):
    """A local path of `path`: a file or folder behind `gs://` and the like is copied to a temporary folder."""
    if "://" not in path:
        return path
    base = path.rstrip("/")
    folder = tempfile.mkdtemp(prefix="adtrs-model-")
    single = FileSystems.match([base])[0].metadata_list
    if single and single[0].path == base:  # a file (a .keras model)
        files, root = single, os.path.dirname(base)
    else:  # a folder (a SavedModel)
        files, root = FileSystems.match([base + "/**"])[0].metadata_list, base
        folder = os.path.join(folder, os.path.basename(base))
    for meta in files:
        target = os.path.join(folder, os.path.relpath(meta.path, root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(meta.path) as source, open(target, "wb") as handle:
            handle.write(source.read())
    return os.path.join(folder, os.path.basename(base)) if single and single[0].path == base else folder


def model_settings(path):
    """`(crop size, model identity)` of a `.keras` file or a SavedModel folder, without loading it.

    The identity is the file or folder name with the first 12 hex digits of
    the SHA-256 of its `.keras` file or its `saved_model.pb`.

    Raises:
        SettingError: not a `.keras` file or a SavedModel of `python -m keras_adtrs.export` (setting `model`).
    """
    import hashlib

    local = _local_copy(path)
    if os.path.isfile(local) and zipfile.is_zipfile(local):
        with zipfile.ZipFile(local) as archive:
            config = json.loads(archive.read("config.json"))["config"]
        backbone = config.get("backbone")
        crop = backbone["config"]["crop_size"] if isinstance(backbone, dict) else config.get("crop_size")
        digest_of = local
    elif os.path.isfile(os.path.join(local, "saved_model.pb")):
        metadata = os.path.join(local, "assets.extra", METADATA_FILE)
        if not os.path.isfile(metadata):
            raise SettingError("model", f"{path}: a SavedModel without {METADATA_FILE}: export it with "
                               "python -m keras_adtrs.export")
        with open(metadata, encoding="utf-8") as handle:
            crop = json.load(handle)["crop_size"]
        digest_of = os.path.join(local, "saved_model.pb")
    else:
        raise SettingError("model", f"{path}: neither a .keras file nor a SavedModel folder")
    if not crop:
        raise SettingError("model", f"{path}: its config names no crop size")
    digest = hashlib.sha256()
    with open(digest_of, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return int(crop), f"{os.path.basename(path.rstrip('/'))}@sha256:{digest.hexdigest()[:12]}"


class _SavedModelScorer:
    """A SavedModel of `python -m keras_adtrs.export` as a crops model: `predict_on_batch(crops) -> scores`."""

    def __init__(self, folder):
        import tensorflow as tf  # a SavedModel needs TensorFlow

        self._loaded = tf.saved_model.load(folder)
        if not hasattr(self._loaded, "score_crop_batch"):
            raise SettingError("model", f"{folder}: this SavedModel has no score_crop_batch function: export it again "
                               "with python -m keras_adtrs.export")
        self._tf = tf

    def predict_on_batch(self, crops):
        return self._loaded.score_crop_batch(self._tf.constant(crops, self._tf.float32)).numpy()


class CropModelHandler(ModelHandler):
    """`RunInference`'s model handler: image crops in, one score per image out.

    Each example is one image's crops, `(n, c, c, 3)` float32; a batch of
    images is scored by `keras_adtrs.models.scoring.score_crop_sets` (crops
    of several images share model calls of `batch_size` crops) and each
    `PredictionResult.inference` is the image's mean score. The model is
    loaded once per worker: a `.keras` file (in `precision`, BatchNorm folded
    for speed, as `predict` does) or a SavedModel.

    Args:
        model_path: str. A `.keras` file or a SavedModel folder.
        batch_size: int. Crops per model call.
        images_per_batch: tuple of int. `(min, max)` images per batch.
        threads: int or None. TensorFlow's intra-op threads per worker.
        precision: str or None. See `ScoringJob.precision`.
    """

    def __init__(self, model_path, batch_size=SCORE_BATCH_SIZE, images_per_batch=(1, 16), threads=None,
                 precision=None):
        super().__init__()
        self.threads = threads
        self.precision = precision
        self.model_path = model_path
        self.batch_size = int(batch_size)
        self.images_per_batch = tuple(int(v) for v in images_per_batch)
        self._crops = Metrics.counter(NAMESPACE, "crops_scored")
        self._images = Metrics.counter(NAMESPACE, "images_scored")
        self._inference_ms = Metrics.distribution(NAMESPACE, "inference_ms")

    def load_model(self):
        configure_worker(self.threads)
        local = _local_copy(self.model_path)
        if os.path.isdir(local):
            return _SavedModelScorer(local)
        from keras_adtrs.models import in_scoring_precision, load_model
        from keras_adtrs.models.folding import folded_for_inference

        model = folded_for_inference(in_scoring_precision(load_model(local), self.precision)[0])
        model.use_constant_weights()  # a worker scores many batches: worth its seconds once
        return model

    def run_inference(self, batch, model, inference_args=None):
        from keras_adtrs.models.scoring import score_crop_sets

        started = time.perf_counter()
        scores = score_crop_sets(model, batch, self.batch_size)
        self._inference_ms.update(int(round(1000 * (time.perf_counter() - started))))
        self._crops.inc(int(sum(len(crops) for crops in batch)))
        self._images.inc(len(batch))
        return [PredictionResult(crops, float(value)) for crops, value in zip(batch, scores)]

    def batch_elements_kwargs(self):
        low, high = self.images_per_batch
        return {"min_batch_size": low, "max_batch_size": high}

    def get_metrics_namespace(self):
        return NAMESPACE


# ------------------------------------------------------------------ inputs
def _is_remote(pattern):
    return "://" in pattern


def read_path_list(path):
    """The paths listed in a text file (one per line; blank lines and `#` comments skipped)."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class ExpandInput(beam.DoFn):
    """One input (pattern, folder or file) -> the image paths it names.

    Local inputs follow `keras_adtrs.data.images.expand_paths` (what
    `predict` scores: folders recursively by extension, files named
    explicitly whatever their extension, a missing file kept so that it
    becomes an error row). Remote inputs (`gs://...`) are matched by Beam's
    filesystems; a folder-like pattern ending in `/` is searched recursively.
    """

    def process(self, pattern):
        if not _is_remote(pattern):
            yield from expand_paths([pattern])
            return
        glob_pattern = pattern + "**" if pattern.endswith("/") else pattern
        matched = FileSystems.match([glob_pattern])[0].metadata_list
        if not matched:
            yield pattern  # becomes an error row
            return
        explicit = glob_pattern == pattern and not any(ch in pattern for ch in "*?[")
        for meta in matched:
            if explicit or os.path.splitext(meta.path)[1].lower() in IMAGE_EXTENSIONS:
                yield meta.path


def failure_kind(message):
    """The kind of a read failure, from `ImageReadError`'s message: for the `failures_<kind>` counters."""
    for kind, words in (("missing", ("No such file", "cannot read file")), ("folder", ("is a folder",)),
                        ("empty", ("file is empty", "empty image")), ("undecodable", ("not a decodable",))):
        if any(word in message for word in words):
            return kind
    return "unreadable"


class ReadCrops(beam.DoFn):
    """A path -> `(path, crops)`, or an error row on the `errors` output (the reason `predict` gives)."""

    ERRORS = "errors"

    def __init__(self, crop_size, crops, threads=None):
        self.crop_size, self.crops, self.threads = int(crop_size), int(crops), threads

    def setup(self):
        configure_worker(self.threads)
        self._failures = {}

    def _fail(self, path, message):
        kind = failure_kind(message)
        if kind not in self._failures:
            self._failures[kind] = Metrics.counter(NAMESPACE, f"failures_{kind}")
        self._failures[kind].inc()
        return beam.pvalue.TaggedOutput(self.ERRORS, {"path": path, "kind": kind, "reason": message})

    def process(self, path):
        try:
            if _is_remote(path):
                try:
                    with FileSystems.open(path) as handle:
                        data = handle.read()
                except (OSError, IOError) as exc:  # Beam's filesystems raise BeamIOError (an IOError)
                    raise ImageReadError(f"{path}: cannot read file ({exc})") from None
                if not data:
                    raise ImageReadError(f"{path}: file is empty")
                image = decode_image(data, name=path)
            else:
                image = load_image(path)
            yield path, image_crops(image, self.crop_size, self.crops)
        except ImageReadError as error:
            yield self._fail(path, str(error))


class SkipScored(beam.DoFn):
    """Leaves out the paths of a side-input set (those an earlier run scored)."""

    def process(self, path, scored):
        if path not in scored:
            yield path


# ------------------------------------------------------------------ outputs
def _shard_name(prefix, kind, fmt):
    return f"{prefix}-{kind}-{uuid.uuid4().hex[:16]}{EXTENSIONS[fmt]}"


def encode_rows(rows, fields, fmt):
    """Rows (dicts) as the bytes of one shard in `fmt`."""
    if fmt == "jsonl":
        return "".join(json.dumps({k: row[k] for k in fields}) + "\n" for row in rows).encode("utf-8")
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return text.getvalue().encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: row[k] for k in fields} for row in rows])
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def decode_rows(data, path):
    """The rows of one shard (its format from its extension)."""
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    if path.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    raise SettingError("skip_scored", f"{path}: not a shard of this pipeline (.csv, .parquet or .jsonl)")


def shard_paths(prefix, kind):
    """Every finished shard `PREFIX-<kind>-*` (files being written are hidden under a temporary name)."""
    matched = FileSystems.match([f"{prefix}-{kind}-*"])[0].metadata_list
    return sorted(m.path for m in matched if m.path.endswith(tuple(EXTENSIONS.values())))


def read_rows(prefix, kind):
    """All rows of `PREFIX-<kind>-*`."""
    rows = []
    for path in shard_paths(prefix, kind):
        with FileSystems.open(path) as handle:
            rows += decode_rows(handle.read(), path)
    return rows


class WriteShards(beam.DoFn):
    """Writes rows as shards `PREFIX-<kind>-<id>.<ext>`: every `rows_per_shard` rows and at each bundle's end.

    Each shard is written under a temporary name and renamed, so a killed
    run leaves whole shards only. Progress goes to stderr when `progress`.
    """

    def __init__(self, prefix, kind, fmt, fields, rows_per_shard, progress=False):
        self.prefix, self.kind, self.fmt, self.fields = prefix, kind, fmt, tuple(fields)
        self.rows_per_shard, self.progress = int(rows_per_shard), bool(progress)

    def setup(self):
        folder = os.path.dirname(self.prefix)
        if folder and not _is_remote(self.prefix):
            os.makedirs(folder, exist_ok=True)
        self._written = 0

    def start_bundle(self):
        self._rows = []

    def _flush(self):
        if not self._rows:
            return
        final = _shard_name(self.prefix, self.kind, self.fmt)
        folder, name = final.rsplit("/", 1) if "/" in final else ("", final)
        temporary = f"{folder}/.tmp-{name}" if folder else f".tmp-{name}"
        with FileSystems.create(temporary) as handle:
            handle.write(encode_rows(self._rows, self.fields, self.fmt))
        FileSystems.rename([temporary], [final])
        self._written += len(self._rows)
        if self.progress:
            print(f"{self.kind}: {self._written} rows written by this worker (latest shard {final})", file=sys.stderr)
        self._rows = []

    def process(self, row):
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_shard:
            self._flush()

    def finish_bundle(self):
        self._flush()


# ------------------------------------------------------------------ the pipeline
def build_pipeline(pipeline, job, crop_size, identity, scored=(), progress=False):
    """Adds the scoring pipeline of `job` to a `beam.Pipeline`.

    Args:
        pipeline: a `beam.Pipeline`.
        job: a `ScoringJob`.
        crop_size: int. The model's crop side.
        identity: str. The model's identity (the rows' `model`).
        scored: collection of str. Paths to leave out (`--skip-scored`).
        progress: bool. Progress lines on stderr.
    """
    inputs = list(job.patterns)
    for listing in job.path_lists:
        inputs += read_path_list(listing)
    paths = (
        pipeline
        | "Inputs" >> beam.Create(inputs)
        | "Expand" >> beam.ParDo(ExpandInput())
        | "Once" >> beam.Distinct()
    )
    if scored:
        already = pipeline | "Scored" >> beam.Create([sorted(scored)])
        paths = paths | "SkipScored" >> beam.ParDo(SkipScored(), scored=beam.pvalue.AsSingleton(
            already | "AsSet" >> beam.Map(set)))
    threads = job.threads_per_worker
    read = paths | "Read" >> beam.ParDo(ReadCrops(crop_size, job.crops, threads)).with_outputs(ReadCrops.ERRORS,
                                                                                              main="crops")
    handler = KeyedModelHandler(CropModelHandler(job.model, job.batch_size, job.images_per_batch, threads,
                                                 job.precision))
    scores = (
        read.crops
        | "Score" >> RunInference(handler)
        | "Rows" >> beam.Map(lambda item: {"path": item[0], "score": score_value(item[1].inference),
                                           "crops": int(len(item[1].example)), "model": identity})
    )
    scores | "WriteScores" >> beam.ParDo(WriteShards(job.output, "scores", job.output_format, SCORE_FIELDS,
                                                     job.rows_per_shard, progress))
    read[ReadCrops.ERRORS] | "WriteErrors" >> beam.ParDo(
        WriteShards(job.output, "errors", job.output_format, ERROR_FIELDS, job.rows_per_shard, progress))
    return pipeline


def default_options(beam_args):
    """Beam's options, and the TensorFlow threads per worker on the DirectRunner (None on other runners).

    `beam_args` as given; on the DirectRunner every local core is a worker
    process unless said otherwise (`--direct_num_workers`,
    `--direct_running_mode`), and the cores are shared among the workers.
    """
    args = list(beam_args or [])
    given = lambda name: any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)  # noqa: E731
    view = PipelineOptions(args).get_all_options(drop_default=False)
    if view.get("runner") not in (None, "DirectRunner", "direct"):
        return PipelineOptions(args), None
    cores = os.cpu_count() or 1
    if not given("direct_num_workers"):
        args.append(f"--direct_num_workers={cores}")
    if not given("direct_running_mode"):
        args.append("--direct_running_mode=multi_processing")
    workers = PipelineOptions(args).get_all_options(drop_default=False)["direct_num_workers"]
    workers = cores if workers <= 0 else workers  # Beam's 0: one per core
    return PipelineOptions(args), max(1, cores // workers)


def run_scoring(job, beam_args=(), progress=True):
    """Runs a batch scoring job; returns what it did.

    Args:
        job: a `ScoringJob`.
        beam_args: list of str. Beam's pipeline options (`--runner`, ...).
        progress: bool. Progress lines on stderr.

    Returns:
        dict: `counters` (the Beam metrics), `wall_seconds`, `images_per_second`,
        `crops_per_second_per_worker` (of the model calls), `skipped` (already
        scored), `model` (identity), `output`.
    """
    job.check()
    crop_size, identity = model_settings(job.model)
    scored = {row["path"] for row in read_rows(job.skip_scored, "scores")} if job.skip_scored else set()
    options, threads = default_options(beam_args)
    if job.threads_per_worker is None and threads:
        job = dataclasses.replace(job, threads_per_worker=threads)
    started = time.time()
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, job, crop_size, identity, scored, progress)
    result = pipeline.run()
    result.wait_until_finish()
    wall = time.time() - started
    counters = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(counter.committed or 0)
    inference_ms = 0
    for dist in result.metrics().query(MetricsFilter().with_name("inference_ms"))["distributions"]:
        inference_ms += int(dist.committed.sum) if dist.committed else 0
    crops = counters.get("crops_scored", 0)
    return {
        "counters": counters,
        "wall_seconds": round(wall, 2),
        "images_per_second": round(counters.get("images_scored", 0) / wall, 3) if wall > 0 else None,
        # Crops per second of one worker's model calls (every worker's calls summed).
        "crops_per_second_per_worker": round(crops / (inference_ms / 1000.0), 2) if inference_ms else None,
        "skipped": len(scored),
        "model": identity,
        "output": job.output,
    }

