"""End to end on image files: two-stream training from a CSV of `path,label,stream` (the way users with paired data,
sketches and photos, bring it), and unsupervised training from a folder of class folders, each through
`TRAINING_METHODS_VIEWS` as the pipeline calls it. The notebook (08c) proves the methods against PML on tensors held
in memory; this checks the file-reading path around them: images decoded, both streams preprocessed alike, the
tester's metrics in the progress table, `model` trained in place."""
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from PIL import Image
from dml_nb.core import seed_everything
from dml_nb.data import csv_items, DMLDataLoaders
from dml_nb.learner import metric_learner
from dml_nb.losses import SupConLoss, TripletMarginLoss
from dml_nb.miners import TripletMarginMiner
from dml_nb.models import L2Norm
from dml_nb.training_views import TRAINING_METHODS_VIEWS, two_stream_metrics, TwoStreamDataLoaders

def write_two_streams(root, n_classes=6, per_stream=3, size=16):
    "Class k: a dark square at a place of its own; stream 'sketch' draws it as an outline, stream 'photo' filled. A CSV path,label,stream."
    rows, rng = [], np.random.default_rng(0)
    for k in range(n_classes):
        y, x = divmod(k, 3)
        for stream in ("sketch", "photo"):
            for i in range(per_stream):
                img = np.full((size, size), 255, np.uint8)
                top, left = 2 + 6 * y + rng.integers(0, 2), 1 + 5 * x + rng.integers(0, 2)
                if stream == "photo": img[top:top + 4, left:left + 4] = 40
                else: img[top, left:left + 4] = img[top + 3, left:left + 4] = img[top:top + 4, left] = img[top:top + 4, left + 3] = 40
                name = f"{stream}_{k}_{i}.png"
                Image.fromarray(img).save(root / name)
                rows.append((name, f"class{k}", stream))
    pd.DataFrame(rows, columns=["path", "label", "stream"]).to_csv(root / "pairs.csv", index=False)
    return root / "pairs.csv"

def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 16), L2Norm())

def test_two_stream_from_csv(tmp_path):
    method = TRAINING_METHODS_VIEWS["two_stream"]
    dls = method.dataloaders(csv_items(write_two_streams(tmp_path)), streams=("sketch", "photo"), preset="tiny_gray", size=16, bs=4, valid_pct=0.5)
    assert isinstance(dls, TwoStreamDataLoaders) and dls.streams == ("sketch", "photo")
    anchors, others, labels = dls.one_batch()
    assert anchors.shape == others.shape == (4, 1, 16, 16) and labels.shape == (4,)
    # each pair: a sketch and a photo of the same class
    pairs = dls.train.dataset.items
    names, other_names = [Path(p).name.split("_") for p in pairs.path], [Path(p).name.split("_") for p in pairs.other_path]
    assert all(a[0] == "sketch" and b[0] == "photo" and a[1] == b[1] for a, b in zip(names, other_names))
    seed_everything(0)
    net = tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    learn = method.learner(dls, net, TripletMarginLoss(margin=0.2), miner=TripletMarginMiner(margin=0.2))
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # `net` itself was trained
    names = list(learn.recorder.metric_names)[1:-1]
    shown = learn.recorder.values[-1][names.index("mean_average_precision_at_r")]
    assert shown == pytest.approx(two_stream_metrics(net, dls)["mean_average_precision_at_r"], abs=1e-6)

def test_two_stream_refusals(tmp_path):
    items = csv_items(write_two_streams(tmp_path))
    make = TRAINING_METHODS_VIEWS["two_stream"].dataloaders
    with pytest.raises(ValueError, match="one stream only, e.g. 'class0'"):
        make(items[~((items.label == "class0") & (items.stream == "photo"))], preset="tiny_gray", bs=2)
    plain = DMLDataLoaders.from_items(items, preset="tiny_gray", size=16, bs=4)
    with pytest.raises(ValueError, match="needs DataLoaders from two_stream_dataloaders"):
        TRAINING_METHODS_VIEWS["two_stream"].learner(plain, tiny_net(), TripletMarginLoss())

def test_unsupervised_from_files(tmp_path):
    items = csv_items(write_two_streams(tmp_path))
    dls = DMLDataLoaders.from_items(items, preset="tiny_gray", size=16, bs=6)
    seed_everything(0)
    net = tiny_net()
    learn = TRAINING_METHODS_VIEWS["unsupervised"].learner(dls, net, SupConLoss(0.1), n_views=3)
    seen = []
    class Peek(__import__("fastai").callback.core.Callback):
        order = 6
        def before_batch(self):
            if self.training: seen.append((self.xb[0].shape, self.yb[0].tolist()))
    learn.add_cb(Peek())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert seen and all(shape[0] == 18 and labels == [i for i in range(6) for _ in range(3)] for shape, labels in seen)
    assert np.isfinite(learn.recorder.values[-1][-1])
