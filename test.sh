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
# one torch thread per process: the notebooks run two at a time and the script tests several, and processes that each
# spin up a thread per core wait on each other (a fit runs 3.6 times slower two-at-a-time with 2 threads each on 2 cores)
export OMP_NUM_THREADS=1
export DML_NB_DATA="${DML_NB_DATA:-$(mktemp -d)}"  # datasets the tests write go to a scratch cache

step "notebooks are clean (nbdev_clean leaves no diff)"
nbdev_clean
git diff --exit-code --stat -- nbs || { echo "nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1; }

step "package is in sync with the notebooks (nbdev_export leaves no diff)"
nbdev_export
if [ -n "$(git status --porcelain -- dml_nb)" ]; then
  git status --porcelain -- dml_nb; echo "nbdev_export changed dml_nb/: run nbdev_export and commit"; exit 1
fi


step "tools for the documentation site: Quarto and a headless browser"
if ! command -v quarto >/dev/null && [ -d ../shared/tools/quarto ]; then
  # Quarto's own installers download from outside the package registries: build it from ../shared (about a minute, once)
  quarto_dir="${DML_NB_QUARTO:-${XDG_CACHE_HOME:-$HOME/.cache}/dml_nb/quarto-1.7.34}"
  bash ../shared/tools/quarto/install.sh "$quarto_dir"
  export PATH="$quarto_dir/bin:$PATH"
fi
if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  # Debian's chromium and chromium-driver for tests/test_docs.py (selenium drives them; nothing is downloaded at run time)
  apt-get install -y -q chromium chromium-driver >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
fi

if command -v quarto >/dev/null; then
  step "documentation site (nbdev_docs: every notebook processed, then rendered by Quarto into _docs/)"
  nbdev_docs
  nbdev_readme  # README.md is index.ipynb rendered by Quarto: it must be the committed one
  git diff --exit-code --stat -- README.md nbs/sidebar.yml nbs/_quarto.yml nbs/nbdev.yml || { echo "nbdev_docs changed README.md or the site's configuration: run nbdev_docs and commit"; exit 1; }
  export DML_NB_REQUIRE_DOCS=1  # tests/test_docs.py reads every page in a browser
else
  echo "no quarto on PATH and no ../shared/tools/quarto: the site is not rendered and tests/test_docs.py skips (https://quarto.org)"
fi

step "every notebook (nbdev_test)"
nbdev_test --n_workers 2 --timing

step "cross-module tests (pytest tests/)"
python -m pytest -q tests/
