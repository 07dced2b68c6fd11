"""Packaging checks that span modules: versions, imports, notebooks <-> modules, README <-> index."""
import configparser, importlib, json, pkgutil, re, subprocess, sys
from pathlib import Path
import dml_nb

root = Path(__file__).resolve().parent.parent

def settings():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(root/"settings.ini"); return cfg["DEFAULT"]

def exported_modules():
    "Module names declared by `#| default_exp` in the notebooks."
    names = set()
    for nb in (root/"nbs").glob("*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(cell["source"]), re.M)
            if m: names.add(m.group(1))
    return names

def test_version_matches_settings():
    assert dml_nb.__version__ == settings()["version"]

def test_every_module_imports():
    for mod in pkgutil.iter_modules(dml_nb.__path__):
        importlib.import_module(f"dml_nb.{mod.name}")

def test_modules_and_notebooks_match():
    "Every module comes from a notebook, and every notebook's module exists (no stale or hand-written files)."
    modules = {m.name for m in pkgutil.iter_modules(dml_nb.__path__)} - {"_modidx"}
    assert modules == exported_modules()

def test_core_public_names():
    from dml_nb.core import (check_embeddings, l2_normalize, LpDistance, CosineSimilarity, DotProductSimilarity,
                             pos_neg_masks, all_pairs_indices, all_triplets_indices, seed_everything, get_device)

def test_readme_is_generated_from_index():
    out = subprocess.run([sys.executable, str(root/"tools"/"readme.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout

def test_requirements_pin_the_nbdev2_stack():
    reqs = settings()["requirements"].split() + settings()["dev_requirements"].split()
    for pin in ["fastai==2.8.7", "fastcore==1.14.5", "fasttransform==0.0.2", "nbdev==2.4.14", "execnb==0.1.18"]:
        assert pin in reqs, pin
