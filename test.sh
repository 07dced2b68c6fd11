#!/usr/bin/env bash
# Install dml_nb into a fresh virtual environment and run every test.
# This is the README's test command, and CI's (.ci/run calls it). It stops at the first problem.
set -euo pipefail
cd "$(dirname "$0")"
venv=${DML_NB_VENV:-.venv-test}
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "fresh virtual environment in $venv"
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev]"
python -m pip check

export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore::FutureWarning
export DML_NB_DATA="${DML_NB_DATA:-$(mktemp -d)}"  # datasets the tests write go to a scratch cache

step "notebooks are clean (nbdev_clean leaves no diff)"
nbdev_clean
git diff --exit-code --stat -- nbs || { echo "nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1; }

step "package is in sync with the notebooks (nbdev_export leaves no diff)"
nbdev_export
if [ -n "$(git status --porcelain -- dml_nb)" ]; then
  git status --porcelain -- dml_nb; echo "nbdev_export changed dml_nb/: run nbdev_export and commit"; exit 1
fi


step "notebooks are ready to render (nbdev_proc_nbs, what nbdev_docs runs before Quarto)"
nbdev_proc_nbs

step "every notebook (nbdev_test)"
nbdev_test --n_workers 2 --timing

step "cross-module tests (pytest tests/)"
python -m pytest -q tests/
