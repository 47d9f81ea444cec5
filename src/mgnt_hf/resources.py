"""Find what ships with mgnt_hf by name: pipelines, classifiers and model card templates.

    from mgnt_hf import MGNTPipeline, shipped
    pipe = MGNTPipeline.from_pretrained(shipped("mgnt-fashion-mnist"))

Installed packages carry them as package data (`mgnt_hf/pipelines/<name>`, `mgnt_hf/<template>.md`); in a source
checkout those are links to the top-level `pipelines/` folder and card templates, which are looked at too, so the
same call works from any working directory, installed or not.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

PACKAGE_DIR = Path(str(importlib.resources.files("mgnt_hf")))
CHECKOUT_DIR = Path(__file__).resolve().parents[2]

DEFAULT_PIPELINE = "mgnt-fashion-mnist"
DEFAULT_VIDEO_PIPELINE = "mgnt-moving-fashion-mnist"
DEFAULT_CLASSIFIER = "fashion-mnist-classifier"
DEFAULT_FRAME_CLASSIFIER = "moving-fashion-mnist-frame-classifier"
IMAGE_CARD_TEMPLATE = "model_card.md"
VIDEO_CARD_TEMPLATE = "model_card_video.md"

# A shipped folder is recognised by the file diffusers or transformers loads it from.
_MARKER_FILES = ("model_index.json", "config.json")


def _candidates(name: str) -> list[Path]:
    if name.endswith(".md"):
        return [PACKAGE_DIR / name, CHECKOUT_DIR / name]
    return [PACKAGE_DIR / "pipelines" / name, CHECKOUT_DIR / "pipelines" / name]


def _found(path: Path, name: str) -> bool:
    if name.endswith(".md"):
        return path.is_file()
    return any((path / marker).is_file() for marker in _MARKER_FILES)


def available() -> list[str]:
    """Names of every shipped pipeline and classifier that can be found."""
    names = set()
    for root in (PACKAGE_DIR / "pipelines", CHECKOUT_DIR / "pipelines"):
        if root.is_dir():
            names.update(child.name for child in root.iterdir() if _found(child, child.name))
    return sorted(names)


def shipped(name: str) -> Path:
    """The folder of the shipped pipeline or classifier `name` (or the path of the card template `name.md`):
    package data first, then the source checkout. `OSError` naming the places looked in and what is available."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"name must be the bare name of a shipped pipeline, classifier or card template, got {name!r}")
    candidates = _candidates(name)
    for candidate in candidates:
        if _found(candidate, name):
            return candidate
    raise OSError(
        f"{name!r} is not shipped with this installation of mgnt_hf (looked in "
        f"{', '.join(map(str, candidates))}); available: {', '.join(available()) or 'none'}"
    )
