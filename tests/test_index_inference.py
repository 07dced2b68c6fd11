"""What spans the inference and index chapters: a run's fingerprint (model *and* preprocessing) guards its index,
and an index built from image files recognises them again."""
import json, shutil
import numpy as np
import pytest
import torch
from PIL import Image
from dml_nb.data import data_config
from dml_nb.index import EmbeddingIndex, file_sha256
from dml_nb.inference import atomic_write_json, load_embedder, model_fingerprint, save_run
from dml_nb.models import create_embedder

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    "Six small grayscale PNGs."
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6): Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / f"{i}.png")
    return sorted(folder.glob("*.png"))

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "One model saved twice: with its preprocessing, and with another image size."
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    model = create_embedder("convnet2", n_in=1, embed_dim=8)
    return (model, save_run(root / "run", model, data_config("tiny_gray")),
            save_run(root / "run_64", model, data_config("tiny_gray", size=64)))

def test_same_weights_other_preprocessing_is_another_model(runs, images, tmp_path):
    model, run, run_64 = runs
    embedder, embedder_64 = load_embedder(run, device="cpu"), load_embedder(run_64, device="cpu")
    assert embedder.fingerprint == model_fingerprint(model, data_config=data_config("tiny_gray"))
    assert embedder.fingerprint != embedder_64.fingerprint  # same weights, other preprocessing
    index = EmbeddingIndex(embedder.embed_dim, fingerprint=embedder.fingerprint)
    index.add(embedder.embed(images), np.arange(len(images)), paths=images)
    index.save(tmp_path / "index")
    assert len(EmbeddingIndex.load(tmp_path / "index", expected_fingerprint=embedder.fingerprint)) == len(images)
    with pytest.raises(ValueError, match="rebuild the index with this model"):
        EmbeddingIndex.load(tmp_path / "index", expected_fingerprint=embedder_64.fingerprint)

def test_edited_preprocessing_is_refused(runs, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(runs[1], edited)
    info = json.loads((edited / "run.json").read_text())
    atomic_write_json(edited / "run.json", {**info, "data_config": {**info["data_config"], "size": 64}})
    with pytest.raises(ValueError, match="data_config does not match the run's fingerprint"):
        load_embedder(edited, device="cpu")

def test_index_recognises_its_images(runs, images, tmp_path):
    embedder = load_embedder(runs[1], device="cpu")
    index = EmbeddingIndex(embedder.embed_dim, fingerprint=embedder.fingerprint)
    index.add(embedder.embed(images[:4]), np.arange(4), paths=images[:4])
    copy = tmp_path / "copy_of_0.png"
    shutil.copy(images[0], copy)
    new = [images[1], copy, images[4], images[5]]  # a stored path, a copy of a stored file, two new images
    index.add(embedder.embed(new), np.array([1, 0, 4, 5]), paths=new, on_duplicate="skip")
    assert index.skipped.tolist() == [0, 1] and len(index) == 6
    assert index.hashes == [file_sha256(p) for p in images]
    # the path of a new image, and the embedding of a copy, find the right neighbour
    scores, positions = index.search(embedder.embed([copy]), k=1)
    assert index.paths_of(positions)[0, 0] == str(images[0]) and scores[0, 0] > 0.9999
