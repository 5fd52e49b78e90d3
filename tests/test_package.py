"""The package's public face: a lazy `import keras_adtrs`, class registration, the commands."""

import os
import subprocess
import sys

import pytest

from conftest import REPO


def run_python(code, **env):
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_import_keras_adtrs_imports_neither_keras_nor_tensorflow():
    result = run_python(
        "import keras_adtrs, sys\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow'))\n"
        "print(keras_adtrs.__version__, sorted(m for m in sys.modules if m.startswith('keras_adtrs')))\n"
    )
    assert "['keras_adtrs', 'keras_adtrs.version']" in result.stdout
    assert result.stderr == ""  # and no TensorFlow log line


def test_public_names_resolve_lazily():
    import keras_adtrs

    for name in keras_adtrs.__all__:
        assert getattr(keras_adtrs, name) is not None, name
    assert set(keras_adtrs.__all__) <= set(dir(keras_adtrs))
    with pytest.raises(AttributeError, match="no_such_name"):
        keras_adtrs.no_such_name  # noqa: B018


def test_keras_imported_first_registers_the_classes():
    """`import keras; import keras_adtrs` registers the custom classes at once (keras.saving finds them)."""
    run_python(
        "import keras\n"
        "import keras_adtrs, sys\n"
        "assert 'keras_adtrs.models' in sys.modules\n"
        "assert keras.saving.get_registered_object('keras_adtrs>ADTRSModel') is keras_adtrs.ADTRSModel\n"
        "assert keras.saving.get_registered_object('keras_adtrs>ScoreAffine') is keras_adtrs.ScoreAffine\n"
    )


def _console_scripts():
    """`CONSOLE_SCRIPTS` of setup.py, read without running it."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CONSOLE_SCRIPTS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no CONSOLE_SCRIPTS")


def test_console_scripts_point_at_each_command_main(capsys):
    import importlib

    scripts = dict(entry.split("=") for entry in _console_scripts())
    assert set(scripts) == {"adtrs-train", "adtrs-pretrain", "adtrs-evaluate", "adtrs-predict", "adtrs-export", "adtrs-convert",
                            "adtrs-serving-client", "keras-adtrs-train"}
    assert scripts["keras-adtrs-train"] == scripts["adtrs-train"]
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        main = getattr(importlib.import_module(module), function)
        assert callable(main), name
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code == 0, name
        assert "usage:" in capsys.readouterr().out, name
