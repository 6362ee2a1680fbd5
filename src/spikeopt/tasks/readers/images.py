"""Image folders and tarballs laid out ``[top/]{train,test}/<class>/*.{jpg,jpeg,png}``.

Class indices follow the sorted class-folder names, samples the sorted paths. This reader can
decode only a subset (:meth:`ImageFolderReader.read_subset`): the labels come from the paths
alone, so a few hundred images of a 60k-JPEG archive decode in a second instead of ~15 s.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from spikeopt.tasks.readers.base import (
    SPLITS,
    Arrays,
    DataError,
    Identity,
    Pick,
    is_tarball,
    make_arrays,
    need_root,
    open_tar,
)

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
IMAGES_HINT = "set data.root to a folder or tarball laid out {train,test}/<class>/*.jpg|jpeg|png"


def image_inputs(root: Path) -> list[Path]:
    """What an image dataset is read from: the tarball, or the ``train`` and ``test`` folders."""
    if is_tarball(root):
        return [root]
    if not root.is_dir():
        raise DataError(f"{root} is neither a folder nor a .tar/.tar.gz/.tgz tarball")
    candidates = [root]
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if len(subdirs) == 1:
        candidates.append(subdirs[0])  # one top folder, e.g. cifar10/{train,test}
    for base in candidates:
        if all((base / s).is_dir() for s in SPLITS):
            return [base / s for s in SPLITS]
    raise DataError(
        f"{root} has no train/ and test/ folders (directly or inside one top folder); "
        + IMAGES_HINT
    )


def _split_class(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """(split, class) of ``[top/]split/class/file``, or None for anything else."""
    parts = parts[1:] if len(parts) == 4 else parts  # one top folder: cifar10/train/cat/1.jpg
    if len(parts) != 3 or parts[0] not in SPLITS or parts[2].startswith("."):
        return None
    return (parts[0], parts[1]) if parts[2].lower().endswith(IMAGE_EXTS) else None


def _encoded_images(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, name, encoded bytes) of every image, streamed from a folder or tarball."""
    if is_tarball(root):
        with open_tar(root) as tf:
            for m in tf:
                key = _split_class(PurePosixPath(m.name).parts) if m.isfile() else None
                fh = tf.extractfile(m) if key else None
                if key and fh is not None:
                    yield *key, m.name, fh.read()
        return
    for split_dir in image_inputs(root):
        for path in split_dir.glob("*/*"):
            key = _split_class(path.relative_to(split_dir.parent).parts)
            if key and path.is_file():
                yield *key, str(path), path.read_bytes()


def _decode(name: str, data: bytes, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # only this reader needs Pillow

    try:
        img = Image.open(io.BytesIO(data))
        rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{name}: cannot decode image ({err})") from None
    if size is not None and rgb.shape[:2] != size:
        raise DataError(
            f"{name} is {rgb.shape[1]}x{rgb.shape[0]}, but the first image is "
            f"{size[1]}x{size[0]}; all images must have one size"
        )
    return rgb


def read_image_folder(root: Path, pick: Pick | None = None) -> Arrays:
    """Images under ``root`` -> uint8 (N, 3, H, W); only those ``pick`` chooses, if given."""
    found: dict[str, list[tuple[str, str, bytes]]] = {s: [] for s in SPLITS}
    for split, cls, name, data in _encoded_images(root):
        found[split].append((cls, name, data))
    for split in SPLITS:
        if not found[split]:
            raise DataError(
                f"no images under {root} in {split}/<class>/*.jpg|jpeg|png (optionally inside "
                f"one top folder); set data.root to a folder or tarball laid out that way"
            )
    classes = sorted({cls for cls, _, _ in found["train"]})
    extra = sorted({cls for cls, _, _ in found["test"]} - set(classes))
    if extra:
        raise DataError(f"{root}: test classes {extra} have no train folder")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    size: tuple[int, int] | None = None
    for split in SPLITS:
        items = sorted(found[split], key=lambda t: t[1])  # path order: same for folder and tar
        y = np.array([classes.index(cls) for cls, _, _ in items], np.int64)
        keep = pick(split, y) if pick is not None else np.arange(len(y))
        images = []
        for i in keep:
            _, name, data = items[i]
            images.append(_decode(name, data, size))
            size = size or images[-1].shape[:2]
        x = np.stack(images).transpose(0, 3, 1, 2) if images else np.zeros((0, 3, 1, 1), np.uint8)
        out[split] = (np.ascontiguousarray(x), y[keep])
    return make_arrays(*out["train"], *out["test"], classes)


class ImageFolderReader:
    """The image reader: ``data.root`` is the folder or tarball; it can decode a subset only."""

    needs_root = True

    def identity(self, root: Path | None) -> Identity:
        """The ``folder`` format and the tarball or the train/test folders it reads."""
        return Identity(["folder"], image_inputs(need_root(root, IMAGES_HINT)))

    def read(self, root: Path | None) -> Arrays:
        """Every image of both splits."""
        return read_image_folder(need_root(root, IMAGES_HINT))

    def read_subset(self, root: Path | None, pick: Pick) -> Arrays:
        """Only the images ``pick`` chooses from each split's labels."""
        return read_image_folder(need_root(root, IMAGES_HINT), pick)
