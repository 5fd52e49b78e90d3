"""Docs check: every command shown in README.md and docs/*.md is real.

Every fenced block (```bash, ```sh, ```shell, ```console or a plain ```) is
read as shell lines. Each command that invokes `python -m keras_adtrs...` or
an `adtrs-*` console script is

- PARSED with that command's own argparse parser (`build_parser()` of the
  module; for `train` the parser built from `training/config.py`'s one table
  of defaults), so a documented option that does not exist fails here;
- RUN here at tiny size, or NAMED in `COVERAGE` with the test that runs it.

Run here, in a temporary folder laid out as the docs assume (`scores.csv`,
`images/`, `photos/`, `a.jpg`, ...; `runs/X` is the run folder of the first
command below):

- `train --dataset csv ...` (tiny: crop 64, one step, random backbone), in a
  subprocess, writing `runs/X/`;
- every documented `predict`, `evaluate` and `export` command, on that
  run's `model.keras`;
- every documented `serving.client` command, against the test stand-in of
  TF Serving (`tests/serving_stand_in.py`) serving the documented export;
- every documented `--help` form.

Run by other tests (see `COVERAGE`): the default training run at tiny size
(`tests/test_train_cli.py`), `--splits` (same file), strategies, XLA and
resume (`tests/test_distribute.py`), the JAX backend
(`tests/test_jax_backend.py`), `convert` (`tests/test_convert.py`), the data
set loaders behind `--manual-dir DIR` (`tests/test_datasets.py`).

Every other program shown in a shell block (`pip`, `docker`, `curl`,
benchmark scripts, ...) must be in `OTHER_PROGRAMS`, with the test that runs
it or the reason why none can.
"""

import argparse
import contextlib
import dataclasses
import importlib
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
COMMAND_MODULES = ("train", "pretrain", "evaluate", "predict", "export", "convert", "serving.client")
SCRIPTS = {
    "adtrs-train": "train",
    "adtrs-pretrain": "pretrain",
    "adtrs-evaluate": "evaluate",
    "adtrs-predict": "predict",
    "adtrs-export": "export",
    "adtrs-convert": "convert",
    "adtrs-serving-client": "serving.client",
}


# ----------------------------------------------------------------------------
# Extraction


@dataclasses.dataclass(frozen=True)
class Shell:
    """One shell command (a pipeline segment) shown in a doc."""

    where: str  # "docs/x.md:12"
    lang: str
    env: tuple  # ("NAME=value", ...)
    argv: tuple

    def __str__(self):
        return f"{self.where}: {shlex.join([*self.env, *self.argv])}"


@dataclasses.dataclass(frozen=True)
class Documented:
    """A documented keras_adtrs command: `python -m keras_adtrs.<command> ARGS`."""

    where: str
    command: str  # "train", "serving.client", ...
    env: tuple
    args: tuple

    def __str__(self):
        return f"{self.where}: {shlex.join([*self.env, 'python', '-m', 'keras_adtrs.' + self.command, *self.args])}"


def fenced_blocks(path):
    """(lang, first line number, lines) of each fenced block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    block = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if block is None:
            if stripped.startswith("```"):
                block = (stripped[3:].strip().lower(), number + 1, [])
        elif stripped.startswith("```"):
            yield block
            block = None
        else:
            block[2].append(line)
    assert block is None, f"{path}: unclosed code block from line {block[1] - 1}"


def shell_lines(lang, lines):
    """(offset, text) of each logical shell line: prompts, continuations, heredocs handled."""
    pending, start, heredoc = "", None, None
    for offset, line in enumerate(lines):
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        if lang == "console":
            if not (line.startswith("$ ") or pending):
                continue  # output
            line = line[2:] if line.startswith("$ ") else line
        if start is None:
            start = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = pending + line, ""
        match = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", text)
        if match:
            heredoc = match.group(1)
        yield start, text
        start = None


def split_commands(text):
    """Tokens of each command of a shell line (split at `&&`, `||`, `;`, `|`)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    current = []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def shell_commands(files=DOC_FILES):
    """Every shell command of the fenced shell blocks of `files`."""
    found = []
    for path in files:
        name = path.relative_to(REPO).as_posix()
        for lang, first, lines in fenced_blocks(path):
            if lang not in SHELL_LANGS:
                continue
            for offset, text in shell_lines(lang, lines):
                for tokens in split_commands(text):
                    env = tuple(t for t in tokens[: next((i for i, t in enumerate(tokens) if not ENV_ASSIGNMENT.match(t)), len(tokens))])
                    argv = tuple(tokens[len(env):])
                    if argv:
                        found.append(Shell(f"{name}:{first + offset}", lang, env, argv))
    return found


def as_documented(shell):
    """The `Documented` command a shell command runs, or None."""
    argv = shell.argv
    if len(argv) >= 3 and re.fullmatch(r"python3?", argv[0]) and argv[1] == "-m" and argv[2].startswith("keras_adtrs"):
        module = argv[2]
        command = module[len("keras_adtrs."):] if module.startswith("keras_adtrs.") else ""
        return Documented(shell.where, command, shell.env, argv[3:])
    if argv[0].startswith("adtrs-"):
        return Documented(shell.where, SCRIPTS.get(argv[0], argv[0]), shell.env, argv[1:])
    return None


def documented_commands():
    commands = [c for c in map(as_documented, shell_commands()) if c is not None]
    assert commands, "no keras_adtrs command found in the docs"
    return commands


DOCUMENTED = documented_commands()
DOCUMENTED_IDS = [str(c).split(": ", 1)[0] + " " + c.command for c in DOCUMENTED]


# ----------------------------------------------------------------------------
# Parsing


def parser_for(command):
    """The command's own parser. For train: the one built from training/config.py's table."""
    assert command in COMMAND_MODULES, f"unknown command keras_adtrs.{command}"
    if command == "train":
        from keras_adtrs.training.config import add_train_arguments

        return add_train_arguments(argparse.ArgumentParser(prog="python -m keras_adtrs.train"))
    module = importlib.import_module(f"keras_adtrs.{command}")
    return module.build_parser()


def is_help(args):
    return "--help" in args or "-h" in args


@pytest.mark.parametrize("documented", DOCUMENTED, ids=DOCUMENTED_IDS)
def test_documented_command_parses(documented):
    parser = parser_for(documented.command)
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            if documented.command == "predict" and option(documented.args, "--engine") == "beam":
                # Beam's own pipeline options pass through (--runner=..., --project=...): options only.
                _, rest = parser.parse_known_args(list(documented.args))
                assert all(a.startswith("--") for a in rest), f"{documented}: {rest} are not options"
            else:
                parser.parse_args(list(documented.args))
            status = 0 if not is_help(documented.args) else None
        except SystemExit as exc:
            status = exc.code
    if is_help(documented.args):
        assert status == 0 and "usage:" in stdout.getvalue(), f"{documented}: --help did not print usage"
    else:
        assert status == 0, f"{documented}\ndoes not parse:\n{stderr.getvalue()}"


def test_documented_scripts_are_installed():
    """Every `adtrs-*` script the docs name, and every command's script, is in setup.py."""
    setup = (REPO / "setup.py").read_text()
    declared = dict(re.findall(r"[\"'](adtrs-[\w-]+)\s*=\s*keras_adtrs\.([\w.]+):main[\"']", setup))
    for script, command in SCRIPTS.items():
        assert declared.get(script) == command, f"setup.py does not install {script} = keras_adtrs.{command}:main"
    for shell in shell_commands():
        if shell.argv[0].startswith("adtrs-"):
            assert shell.argv[0] in SCRIPTS, f"{shell}: unknown script"


# ----------------------------------------------------------------------------
# Which documented command is run where

HERE = "run here"
PUBLIC_SETS = ("live_iqa", "csiq", "tid2013", "kadid10k", "live_challenge", "koniq10k")


def option(args, name):
    """The value of `--name` in args (last one wins, as argparse), or None."""
    value = None
    for k, arg in enumerate(args):
        if arg == name and k + 1 < len(args):
            value = args[k + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def train_with(predicate):
    return lambda c: c.command == "train" and predicate(c)


COVERAGE = [
    # (what, predicate, where): the first rule that matches a documented command applies.
    ("--help", lambda c: is_help(c.args), HERE),
    ("pretrain", lambda c: c.command == "pretrain",
     "tests/test_pretraining.py::test_pretraining_lowers_its_loss_and_round_trips, "
     "tests/test_pretraining.py::test_killed_pretraining_resumes_and_train_starts_from_it, "
     "tests/test_benchmarks.py::test_clive_pipeline_script_runs_both_commands"),
    ("train --init-from", train_with(lambda c: option(c.args, "--init-from") is not None),
     "tests/test_pretraining.py::test_init_from_copies_backbone_and_block_exactly, "
     "tests/test_pretraining.py::test_killed_pretraining_resumes_and_train_starts_from_it, "
     "tests/test_benchmarks.py::test_clive_pipeline_script_runs_both_commands"),
    ("train on the JAX backend",
     train_with(lambda c: option(c.args, "--backend") == "jax" or "KERAS_BACKEND=jax" in c.env),
     "tests/test_jax_backend.py::test_killed_jax_run_resumes_at_the_next_epoch"),
    ("train --strategy multiworker", train_with(lambda c: option(c.args, "--strategy") == "multiworker"),
     "tests/test_distribute.py::test_multiworker_two_local_workers_identical_weights, "
     "tests/test_distribute.py::test_multiworker_killed_job_resumes"),
    ("train --strategy mirrored", train_with(lambda c: option(c.args, "--strategy") == "mirrored"),
     "tests/test_distribute.py::test_mirrored_strategy_matches_single_device, "
     "tests/test_distribute.py::test_mirrored_strategy_cli_run_mixed_precision"),
    ("train --splits N", train_with(lambda c: option(c.args, "--splits") is not None),
     "tests/test_train_cli.py::test_repeated_splits_protocol_keeps_each_split"),
    ("train --folds K", train_with(lambda c: option(c.args, "--folds") is not None),
     "tests/test_folds.py::test_folds_test_every_image_once_and_pool_their_predictions"),
    ("train --config FILE", train_with(lambda c: option(c.args, "--config") is not None),
     "tests/test_train_cli.py::test_recipe_file_fills_the_settings_and_flags_override_it"),
    ("train, killed and rerun", train_with(lambda c: option(c.args, "--checkpoint-every-steps") is not None),
     "tests/test_distribute.py::test_killed_run_resumes_strategy_none"),
    ("train on a CSV data set", train_with(lambda c: option(c.args, "--dataset") == "csv"), HERE),
    ("train on LIVE-C (release layout)", train_with(lambda c: option(c.args, "--dataset") == "live_challenge"),
     "tests/test_datasets.py::test_live_challenge_real_dev_subset, "
     "tests/test_datasets.py::test_load_source_from_dummy_data"),
    ("train on another public set", train_with(lambda c: option(c.args, "--dataset") in PUBLIC_SETS),
     "tests/test_datasets.py::test_load_source_from_dummy_data"),
    ("train with a local backbone weights file",
     train_with(lambda c: (option(c.args, "--backbone-weights") or "imagenet").lower() not in ("imagenet", "none")),
     "tests/test_model.py::test_local_backbone_weights_file"),
    ("train on the default set", train_with(lambda c: option(c.args, "--dataset") in (None, "default")),
     "tests/test_train_cli.py::test_train_command_writes_every_file"),
    ("predict with a LiteRT or ONNX artifact",
     lambda c: c.command == "predict" and (
         option(c.args, "--runtime") in ("litert", "onnx") or (option(c.args, "--model") or "").endswith((".tflite", ".onnx"))),
     "tests/test_deployment.py::test_predict_runtimes_give_the_keras_rows, "
     "tests/test_deployment.py::test_predict_map_writes_png_and_grid"),
    ("export --format litert / onnx",
     lambda c: c.command == "export" and option(c.args, "--format") in ("litert", "onnx"),
     "tests/test_deployment.py::test_every_format_exports_with_its_metadata, "
     "tests/test_deployment.py::test_unsupported_combinations_are_named"),
    ("predict --engine beam", lambda c: c.command == "predict" and option(c.args, "--engine") == "beam",
     "tests/test_scoring_beam.py::test_beam_scores_equal_score_and_the_predict_command, "
     "tests/test_scoring_beam.py::test_every_path_once_across_scores_and_errors"),
    ("predict", lambda c: c.command == "predict", HERE),
    ("evaluate --baseline on a K-fold run", lambda c: c.command == "evaluate" and option(c.args, "--baseline"),
     "tests/test_folds.py::test_evaluate_prints_the_yardsticks_on_the_same_folds"),
    ("evaluate", lambda c: c.command == "evaluate", HERE),
    ("export", lambda c: c.command == "export", HERE),
    ("serving client", lambda c: c.command == "serving.client", HERE),
    ("convert", lambda c: c.command == "convert",
     "tests/test_convert.py::test_cli_converts_npz, tests/test_convert.py::test_cli_without_torch_explains"),
]


def coverage(documented):
    for what, predicate, where in COVERAGE:
        if predicate(documented):
            return what, where
    return None, None


def test_every_documented_command_is_run_somewhere():
    for documented in DOCUMENTED:
        what, where = coverage(documented)
        assert what is not None, f"{documented}\nis neither run here nor covered by a test named in COVERAGE"


def named_tests(where):
    return [name.strip() for name in where.split(",")]


@pytest.mark.parametrize("where", sorted({w for _, _, w in COVERAGE if w != HERE}))
def test_coverage_names_existing_tests(where):
    for name in named_tests(where):
        path, _, function = name.partition("::")
        source = (REPO / path).read_text()
        assert re.search(rf"^\s*def {re.escape(function)}\(", source, re.M), f"COVERAGE names {name}, which does not exist"


# ----------------------------------------------------------------------------
# Every other program shown in a shell block

NOT_RUN = "not run by the test suite: "
OTHER_PROGRAMS = {
    "pip": "bash .ci/run installs the package the same way (pip install -e .[dev,jax,litert,onnx,beam]) in a fresh "
        "virtual environment",
    "git": "the before-stop hook's fresh-clone check (docs/contributing.md); CI clones main the same way",
    "cp": "part of the fresh-clone check above",
    "cd": "part of the fresh-clone check above",
    "rm": "part of the fresh-clone check above",
    "python -m pytest": "the test suite itself (bash .ci/run, bash .ci/run-slow)",
    "bash .ci/run": "CI",
    "bash .ci/run-slow": "CI's slow job",
    "python benchmarks/throughput.py":
        "tests/test_benchmarks.py::test_throughput_benchmark_prints_its_table (crop 64; every mode in the slow "
        "test_throughput_benchmark_prints_every_row); its options are checked here",
    "bash benchmarks/gpu_clive_run.sh": NOT_RUN + "it needs the lent GPU machine, or ../shared's LIVE-C subset and "
        "a minute of JAX compilation for --smoke; its stages and options are checked here",
    "python benchmarks/deployment.py":
        "tests/test_deployment.py::test_deployment_benchmark_prints_its_table (crop 64, LiteRT only); "
        "its options are checked here",
    "python benchmarks/quality_maps.py":
        "tests/test_deployment.py::test_quality_maps_script_writes_maps (crop 64); its options are checked here",
    "python benchmarks/pretraining_ablation.py":
        "tests/test_benchmarks.py::test_pretraining_ablation_prints_its_table (tiny, LIVE-C dummy release); "
        "its options are checked here",
    "python benchmarks/clive_recipes.py":
        "tests/test_benchmarks.py::test_clive_recipes_prints_its_table (tiny, LIVE-C dummy release); "
        "its options are checked here",
    "python benchmarks/scale.py":
        "tests/test_scoring_beam.py::test_scale_benchmark_prints_its_table (tiny); its options are checked here",
    "python benchmarks/precision_accuracy.py":
        "tests/test_benchmarks.py::test_precision_accuracy_prints_both_tables (tiny, LIVE-C dummy release); "
        "its options are checked here",
    "bash benchmarks/clive_pipeline.sh":
        "tests/test_benchmarks.py::test_clive_pipeline_script_runs_both_commands (tiny, LIVE-C dummy release)",
    "apt-get": NOT_RUN + "installs Debian packages (the wallpaper photographs); benchmarks/clive_pipeline.sh runs it "
        "as root when they are missing",
    "saved_model_cli": "tests/test_export.py::test_saved_model_cli_lists_both_signatures",
    "docker": NOT_RUN + "no Docker engine on the development and CI machines (docs/serving.md says so)",
    "tensorflow_model_server": NOT_RUN + "no TF Serving binary on the development and CI machines",
    "curl": NOT_RUN + "the REST API of the real TF Serving binary, which is not available (docs/serving.md)",
}
SCRIPT_SOURCES = {
    "python benchmarks/throughput.py": ["benchmarks/throughput.py"],
    "bash benchmarks/gpu_clive_run.sh": ["benchmarks/gpu_clive_run.sh", "benchmarks/gpu_clive_run.py"],
    "python benchmarks/deployment.py": ["benchmarks/deployment.py"],
    "python benchmarks/quality_maps.py": ["benchmarks/quality_maps.py"],
    "python benchmarks/pretraining_ablation.py": ["benchmarks/pretraining_ablation.py"],
    "python benchmarks/clive_recipes.py": ["benchmarks/clive_recipes.py"],
    "python benchmarks/scale.py": ["benchmarks/scale.py"],
    "python benchmarks/precision_accuracy.py": ["benchmarks/precision_accuracy.py"],
}


def program_key(argv):
    if re.fullmatch(r"python3?", argv[0]) and len(argv) > 1:
        return f"python -m {argv[2]}" if argv[1] == "-m" and len(argv) > 2 else f"python {argv[1]}"
    if argv[0] == "bash" and len(argv) > 1:
        return f"bash {argv[1]}"
    return argv[0]


def test_every_other_shell_command_is_listed():
    for shell in shell_commands():
        if as_documented(shell) is not None:
            continue
        key = program_key(shell.argv)
        assert key in OTHER_PROGRAMS, f"{shell}\nis a command the docs check does not know: add it to OTHER_PROGRAMS"
        for arg in shell.argv[1:]:  # repository paths named in the command exist
            if re.match(r"^(tests|benchmarks|notebooks|serving|\.ci)/", arg):
                assert (REPO / arg.split("::")[0]).exists(), f"{shell}: {arg} does not exist"
        sources = SCRIPT_SOURCES.get(key)
        if sources:
            text = "".join((REPO / s).read_text() for s in sources)
            for arg in shell.argv[2:]:
                if arg.startswith("--"):
                    assert f'"{arg.split("=")[0]}"' in text, f"{shell}: {sources[0]} has no option {arg}"
            if key.startswith("bash benchmarks/gpu_clive_run.sh"):
                assert shell.argv[2] in ("prepare", "run"), f"{shell}: unknown stage"


# ----------------------------------------------------------------------------
# Python blocks and references to the code


def python_blocks():
    for path in DOC_FILES:
        for lang, first, lines in fenced_blocks(path):
            if lang == "python":
                yield f"{path.relative_to(REPO).as_posix()}:{first}", "\n".join(lines)


def resolve(dotted):
    """Imports the longest module prefix of `dotted` and gets the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def test_python_blocks_compile_and_their_imports_resolve():
    import ast

    for where, source in python_blocks():
        tree = ast.parse(source, where)
        compile(tree, where, "exec")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_adtrs"):
                for alias in node.names:
                    resolve(f"{node.module}.{alias.name}")


def doc_texts():
    return {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8") for path in [*DOC_FILES, REPO / "serving" / "README.md"]}


def test_named_code_exists():
    """Every `keras_adtrs.a.b` name and every repository path the docs mention exists."""
    missing = []
    for name, text in doc_texts().items():
        for dotted in sorted(set(re.findall(r"(?<![\w/.-])keras_adtrs(?:\.\w+)+", text))):
            try:
                resolve(dotted)
            except (ImportError, AttributeError) as exc:
                missing.append(f"{name}: {dotted} ({exc})")
        for match in re.finditer(r"(?<![\w/.-])((?:keras_adtrs|tests|benchmarks|notebooks|serving|\.ci|docs)/[\w./-]*\w(?:::\w+)?)", text):
            path = match.group(1)
            if text[match.end():match.end() + 1] in ("*", "<"):
                continue  # a pattern, not a path
            file, _, function = path.partition("::")
            target = REPO / file
            if not target.exists():
                missing.append(f"{name}: {path}")
            elif function and not re.search(rf"^\s*def {function}\(", target.read_text(), re.M):
                missing.append(f"{name}: {path}")
    assert not missing, "the docs name code that does not exist:\n" + "\n".join(missing)


def test_markdown_links_resolve():
    for name, text in doc_texts().items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (REPO / name).parent / file if file else REPO / name
            assert path.exists(), f"{name}: link to {target}: no such file"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path), f"{name}: link to {target}: no such heading"


def anchors(path):
    """GitHub's heading anchors of a Markdown file."""
    found = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return found


def test_readme_is_short_and_plain():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 8000, "README.md is over 8,000 characters"
    for name, text in doc_texts().items():
        for pattern in (r"\bI\b", r"\b[Mm]y\b", r"\b[Ss]ession"):
            match = re.search(pattern, text)
            assert not match, f"{name}: {text[max(0, match.start() - 40):match.end() + 40]!r}"


# ----------------------------------------------------------------------------
# Running the cheap commands at tiny size

TINY_TRAIN = [  # appended to a documented train command: later options win in argparse
    "--crop-size", "64", "--epochs", "1", "--steps-per-epoch", "1", "--crops-per-image", "1",
    "--batch-size", "4", "--test-crops", "1", "--backbone-weights", "none", "--no-export", "--quiet",
]
RUN_FOLDER = "runs/X"
STAGES = ("train", "predict", "evaluate", "export", "serving.client")


def run_here():
    """The documented commands run here (duplicates once), train first, the client last."""
    seen, commands = set(), []
    for documented in DOCUMENTED:
        key = (documented.command, documented.env, documented.args)
        if coverage(documented)[1] == HERE and key not in seen:
            seen.add(key)
            commands.append(documented)
    return sorted(commands, key=lambda c: (is_help(c.args), STAGES.index(c.command) if c.command in STAGES else 0))


RUN_HERE = run_here()


def _image(path, seed, size=(72, 96)):
    rng = np.random.default_rng(seed)
    level = 40 + 12 * (seed % 15)
    array = np.clip(rng.normal(level, 25, (*size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder laid out as the docs assume, with `runs/X` made by the documented CSV training command."""
    root = tmp_path_factory.mktemp("docs_world")
    rows = ["image,score,reference"]
    for k in range(20):  # 10 references x 2 images: the CSV data set of the docs
        name = f"ref{k // 2:02d}_{k % 2}.png"
        _image(root / "images" / name, k)
        rows.append(f"{name},{10 + 4 * k},ref{k // 2:02d}")
    (root / "scores.csv").write_text("\n".join(rows) + "\n")
    for k, name in enumerate(["photos/p1.jpg", "photos/sub/p2.png", "more/m1.jpg", "extra/e1.png", "a.jpg", "b.png", "b.jpg"]):
        _image(root / name, 100 + k)

    trains = [c for c in RUN_HERE if c.command == "train" and not is_help(c.args)]
    assert trains, "the docs show no training command that can run here (a --dataset csv one)"
    args = [*trains[0].args, *TINY_TRAIN, "--output-dir", RUN_FOLDER]
    environment = {**os.environ, "KERAS_ADTRS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "keras_adtrs.train", *args], cwd=root, env=environment,
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"{trains[0]} (tiny) failed:\n{result.stderr[-3000:]}"
    assert (root / RUN_FOLDER / "model.keras").is_file()
    return root


@pytest.fixture()
def in_world(world, monkeypatch):
    monkeypatch.chdir(world)
    return world


def _main(command, args):
    module = importlib.import_module(f"keras_adtrs.{command}")
    try:
        return module.main(list(args)) or 0
    except SystemExit as exc:
        return exc.code or 0


@pytest.fixture(scope="module")
def stand_in_server(world):
    """The test stand-in of TF Serving, serving `exports/adtrs/<latest>` (exported here if no command did)."""
    try:
        import serving_stand_in as stand_in
    except ImportError:  # tests/ is a package
        from tests import serving_stand_in as stand_in

    if not (world / "exports" / "adtrs").is_dir():
        from keras_adtrs import export

        assert export.main(["--model", str(world / RUN_FOLDER / "model.keras"), "--export-dir", str(world / "exports")]) == 0
    with stand_in.ServingStandIn(str(world / "exports"), "adtrs") as server:
        yield server


@pytest.mark.parametrize(
    "documented", [c for c in RUN_HERE if not is_help(c.args) and c.command != "train"],
    ids=lambda c: str(c).split(": ", 1)[0] + " " + c.command,
)
@pytest.mark.large
def test_documented_command_runs(documented, in_world, request, capsys):
    args = list(documented.args)
    if documented.command == "serving.client":
        server = request.getfixturevalue("stand_in_server")
        assert option(args, "--model") == server.model_name
        args = [server.target if arg == option(args, "--server") else arg for arg in args]
    status = _main(documented.command, args)
    out = capsys.readouterr()
    assert status == 0, f"{documented}\nexit status {status}:\n{out.err[-3000:]}"
    if documented.command == "export":
        export_dir = in_world / option(args, "--export-dir") / (option(args, "--name") or "adtrs")
        assert any((v / "saved_model.pb").is_file() for v in export_dir.iterdir()), "no SavedModel written"
    if documented.command in ("predict", "serving.client") and option(args, "--format") == "json":
        import json

        rows = json.loads(out.out)
        assert rows and all("score" in row for row in rows), rows
    if documented.command == "evaluate":
        output_dir = option(args, "--output-dir") or str(pathlib.Path(option(args, "--model")).parent / "evaluation")
        assert (in_world / output_dir / "evaluation.json").is_file()


@pytest.mark.parametrize("documented", [c for c in RUN_HERE if is_help(c.args)], ids=lambda c: c.command)
def test_documented_help_runs(documented, capsys):
    status = _main(documented.command, documented.args)
    assert status == 0 and "usage:" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# The contributing page's layout map


def layout_map_modules():
    """The modules the layout map of docs/contributing.md lists: `a/b.py` paths under `keras_adtrs/`."""
    text = (REPO / "docs" / "contributing.md").read_text(encoding="utf-8")
    block = next(lines for lang, _, lines in fenced_blocks(REPO / "docs" / "contributing.md")
                 if lang == "text" and lines and lines[0].strip() == "keras_adtrs/")
    assert text  # the page was read
    folders, listed = [], set()
    for line in block[1:]:
        indent = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0] if line.strip() else ""
        folders = folders[: max(indent - 1, 0)]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        elif name.endswith(".py"):
            listed.add("/".join([*folders, name]))
    return listed


def test_layout_map_lists_every_module():
    """docs/contributing.md's map names every module of the package and nothing else (TFDS builders: one line)."""
    package = REPO / "keras_adtrs"
    actual = {p.relative_to(package).as_posix() for p in package.rglob("*.py")
              if not re.match(r"data/tfds/[^/]+/", p.relative_to(package).as_posix())}
    listed = layout_map_modules()
    assert listed == actual, f"missing from the map: {sorted(actual - listed)}; not in the package: {sorted(listed - actual)}"
