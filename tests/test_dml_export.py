"""End-to-end tests of the console script dml_export (ONNX and TorchScript exports of a run folder).

They run the *installed* script as a subprocess on a tiny run folder (an untrained Conv-2 saved by save_run with the
tiny_gray preprocessing) and check the exported files against PyTorch on real images (scikit-learn's digits written as
PNGs) with onnxruntime and torch.jit.load directly, not through dml_nb. Independent commands run concurrently.
"""
import json, subprocess
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from scripts import check_user_error, execute, ok, run_many

def dml_export(*args) -> subprocess.CompletedProcess: return execute("dml_export", *args)

FILES = {"onnx": "embedder.onnx", "torchscript": "embedder.torchscript.pt"}

def listing(folder:Path) -> dict:
    "Every file under `folder` (hidden ones included) with its content."
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "A run folder and a folder of real images."
    from sklearn.datasets import load_digits
    from dml_nb.models import create_embedder
    from dml_nb.data import data_config
    from dml_nb.inference import save_run
    work = tmp_path_factory.mktemp("dml_export")
    digits = load_digits()
    images = work / "images"
    for i in range(12):
        (images / str(digits.target[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(images / str(digits.target[i]) / f"{i}.png")
    torch.manual_seed(0)
    run = save_run(work / "run", create_embedder("convnet2", n_in=1, embed_dim=16), data_config("tiny_gray"))
    return work, run, images

@pytest.fixture(scope="module")
def exported(setup):
    "Both formats exported by dml_export, concurrently."
    work, run, images = setup
    results = run_many({fmt: ("dml_export", run, "--format", fmt, "--images", images, "--n_images", 8) for fmt in FILES})
    return {fmt: ok(proc) for fmt, proc in results.items()}

def reference(run:Path, paths:list):
    "PyTorch's embeddings (the rebuilt model, fastai's preprocessing) and the exported models' uint8 input."
    from dml_nb.inference import load_embedder, resized_images
    embedder = load_embedder(run, device="cpu")
    return embedder.embed(paths, normalize=False), resized_images(paths, embedder.data_config).numpy()

def test_both_formats_match_pytorch(setup, exported):
    work, run, images = setup
    paths = sorted(images.rglob("*.png"))
    expected, pixels = reference(run, paths)
    assert pixels.dtype == np.uint8 and pixels.shape == (len(paths), 1, 32, 32)
    for fmt, proc in exported.items():
        assert f"wrote {run / FILES[fmt]}" in proc.stdout and "parity with PyTorch on 8 images" in proc.stdout, proc.stdout
        record = json.loads((run / f"{FILES[fmt]}.json").read_text())
        assert record["format"] == fmt and record["parity"]["max_abs_diff"] < 1e-4 and record["parity"]["n_images"] == 8
        assert record["fingerprint"] == json.loads((run / "run.json").read_text())["fingerprint"]
    # the files alone, with their own runtimes, at several batch sizes (dynamic batch axis)
    import onnxruntime as ort
    session = ort.InferenceSession(str(run / FILES["onnx"]), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(run / FILES["torchscript"]))
    for batch in (1, 5, len(paths)):
        onnx_out = session.run(["embeddings"], {"images": pixels[:batch]})[0]
        with torch.no_grad(): ts_out = scripted(torch.from_numpy(pixels[:batch])).numpy()
        assert onnx_out.shape == ts_out.shape == (batch, 16)
        assert np.abs(onnx_out - expected[:batch]).max() < 1e-4
        assert np.abs(ts_out - expected[:batch]).max() < 1e-4
    # load_embedder uses them: the same embeddings as the PyTorch run
    from dml_nb.inference import load_embedder
    torch_run = load_embedder(run, device="cpu").embed(paths)
    for fmt in FILES:
        assert np.abs(load_embedder(run, backend=fmt).embed(paths) - torch_run).max() < 1e-4
        assert np.abs(load_embedder(run / FILES[fmt]).embed(paths[:3]) - torch_run[:3]).max() < 1e-4

def test_existing_export_is_kept(setup, exported):
    work, run, images = setup
    before = listing(run)
    proc = dml_export(run, "--format", "onnx", "--images", images, "--n_images", 4)
    check_user_error(proc, "already exist", "--overwrite")
    assert listing(run) == before
    result = json.loads(ok(dml_export(run, "--format", "onnx", "--images", images, "--n_images", 4, "--overwrite", "--json")).stdout)
    assert result["path"] == str(run / "embedder.onnx") and result["parity"]["max_abs_diff"] < 1e-4
    record = json.loads((run / "embedder.onnx.json").read_text())
    assert record["parity"]["n_images"] == 4 and record["file_sha256"] == result["file_sha256"]  # replaced

def test_bad_input_writes_nothing(setup, exported, tmp_path):
    work, run, images = setup
    not_a_run = tmp_path / "not_a_run"; not_a_run.mkdir(); (not_a_run / "notes.txt").write_text("mine")
    before_run, before_other = listing(run), listing(not_a_run)
    results = run_many({
        "not a run folder": ("dml_export", not_a_run),
        "unknown format": ("dml_export", run, "--format", "tflite", "--out", tmp_path / "x"),
        "parity refused": ("dml_export", run, "--format", "torchscript", "--tol", 0, "--images", images, "--n_images", 4, "--out", tmp_path / "strict" / "e.pt"),
    })
    check_user_error(results["not a run folder"], "not a complete run folder", "run.json is missing")
    check_user_error(results["unknown format"], "unknown format 'tflite'", "onnx", "torchscript")
    check_user_error(results["parity refused"], "differs from PyTorch", "nothing written")
    # no partial or temporary files anywhere, the user's files untouched
    assert listing(run) == before_run and listing(not_a_run) == before_other
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").iterdir())
