"""Train the ConvNet on a labelled image folder (`nnvis demo train --data DIR`).

DIR is either what `nnvis demo digits` writes (DIR/train and DIR/test, each with
class folders) or one tree of class folders, of which a seeded fifth of each
class is held out. The recipe is plain and stated: SGD with momentum 0.9 and
weight decay 5e-4 (the papers' evaluation optimizer), a cosine learning-rate
decay, batches of 64, and shifts of up to 2 pixels as the only augmentation
(a mirrored or rotated digit is another digit or none). Deterministic for a
seed and thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nnvis_core.images import discover_images, folder_label, load_rgb
from nnvis_core.models.convnet import ConvNet, ConvNetConfig, build_convnet
from nnvis_core.models.convnet_source import folder_shape, save_checkpoint
from nnvis_core.models.loaded import Preprocess

HELD_OUT_SHARE = 0.2
SHIFT = 2  # pixels of random translation


@dataclass(frozen=True)
class Recipe:
    epochs: int = 15
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 64


@dataclass
class FolderData:
    """uint8 (N, H, W, 3) pictures and labels of the two parts, with the class names."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: list[str]


def _read(records, classes: list[str], side: int) -> tuple[np.ndarray, np.ndarray]:
    index = {name: i for i, name in enumerate(classes)}
    pictures, labels = [], []
    for record in records:
        label = folder_label(record.relpath)
        if label not in index:
            continue
        picture = load_rgb(record.path)
        if picture.size != (side, side):
            picture = picture.resize((side, side))
        pictures.append(np.asarray(picture, dtype=np.uint8))
        labels.append(index[label])
    return np.stack(pictures), np.asarray(labels, dtype=np.int64)


def read_folder(data_dir: Path, side: int, classes: list[str], seed: int) -> FolderData:
    """The two parts: DIR/train and DIR/test when both exist, else a seeded per-class split of DIR."""
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        return FolderData(_read(discover_images(data_dir / "train"), classes, side),
                          _read(discover_images(data_dir / "test"), classes, side), classes)
    pictures, labels = _read(discover_images(data_dir), classes, side)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[:max(1, round(HELD_OUT_SHARE * len(members)))]] = True
    return FolderData((pictures[~test], labels[~test]), (pictures[test], labels[test]), classes)


def as_inputs(pictures: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """(N, 3, H, W) normalized float inputs, as the report feeds the model."""
    x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return (x - mean) / std


def shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to SHIFT pixels in each direction (edges filled with the background)."""
    padded = F.pad(x, (SHIFT,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * SHIFT + 1, (len(x), 2), generator=generator)
    side_h, side_w = x.shape[-2:]
    return torch.stack([padded[i, :, dy:dy + side_h, dx:dx + side_w] for i, (dy, dx) in enumerate(offsets.tolist())])


@torch.no_grad()
def accuracy(model: ConvNet, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / max(1, len(x))


def train_on_folder(data_dir: Path, output: Path, seed: int = 0, recipe: Recipe = Recipe(),
                    architecture: dict | None = None, log: Callable[[str], None] = print) -> float:
    """Train a ConvNet shaped for `data_dir`, save it as a self-describing checkpoint, and return its
    accuracy on the held-out part."""
    started = time.perf_counter()
    data_dir, output = Path(data_dir), Path(output)
    shape_dir = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    channels, side, classes, mean, std = folder_shape(shape_dir)
    if len(classes) < 2:
        raise ValueError(f"{shape_dir}: training needs class subfolders of at least 2 classes, found {len(classes)}")
    config = ConvNetConfig(**{"channels": channels, "side": side, "classes": len(classes), **(architecture or {})})
    preprocess = Preprocess(side, side, mean, std)
    data = read_folder(data_dir, side, classes, seed)
    x_train, y_train = as_inputs(data.train[0], preprocess), torch.from_numpy(data.train[1])
    x_test, y_test = as_inputs(data.test[0], preprocess), torch.from_numpy(data.test[1])
    log(f"{len(x_train)} training and {len(x_test)} held-out images, {side}x{side} px, "
        f"{'grayscale' if channels == 1 else 'colour'}, {len(classes)} classes "
        f"({time.perf_counter() - started:.1f}s)")
    model = build_convnet(config, seed)
    generator = torch.Generator().manual_seed(seed)
    steps = recipe.epochs * -(-len(x_train) // recipe.batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), recipe.batch):
            chosen = order[start:start + recipe.batch]
            loss = F.cross_entropy(model(shifted(x_train[chosen], generator)), y_train[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(chosen)
        log(f"epoch {epoch + 1}/{recipe.epochs}: loss {total / len(x_train):.4f}, held-out accuracy "
            f"{accuracy(model, x_test, y_test):.4f} ({time.perf_counter() - started:.0f}s)")
    held_out = accuracy(model, x_test, y_test)
    seconds = time.perf_counter() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model.eval(), output, classes, preprocess,
                    {"data": str(data_dir), "held_out_accuracy": held_out, "train_images": len(x_train),
                     "held_out_images": len(x_test), "seed": seed, "epochs": recipe.epochs,
                     "seconds": round(seconds, 1), "threads": torch.get_num_threads()})
    log(f"held-out accuracy {held_out:.4f} on {len(x_test)} images; saved {output} ({seconds:.0f}s total)")
    return held_out
