# Sourced by .ci/run and .ci/run-slow: a fresh virtual environment of CI's own on every run.
#
# The environment lives in .ci/venv (ignored by git) and is rebuilt from nothing each time, so
# a package installed by hand elsewhere can never hide a missing install step. pip's download
# and wheel cache (~/.cache/pip, or $PIP_CACHE_DIR) is kept between runs: a rebuild then costs
# minutes, not the first install's downloads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
CI_PYTHON=${CI_PYTHON:-python3}
CI_VENV=.ci/venv
started=$(date +%s)
rm -rf "$CI_VENV"
"$CI_PYTHON" -m venv "$CI_VENV"
# shellcheck disable=SC1091
source "$CI_VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev,jax,litert,onnx,beam]"
echo "ci: fresh environment $CI_VENV ($(python --version 2>&1)), installed in $(( $(date +%s) - started )) s"
