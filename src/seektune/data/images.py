"""Image paths of a record (`images: [path, ...]`, LLaMA-Factory style): resolved relative to the data file,
refused when they leave its folder or do not exist; each image is an `<image>` placeholder in a user turn
(one is put at the start of the first user turn when the record has none)."""

from __future__ import annotations

from pathlib import Path

from seektune.errors import DataError

PLACEHOLDER = "<image>"


def attach_images(conv, record) -> None:
    data = record.data if isinstance(record.data, dict) else {}
    images = data.get("images", data.get("image"))
    if images is None:
        return
    if isinstance(images, str):
        images = [images]
    fail = lambda problem: DataError(record.file, record.index, "images", problem, line=record.line)  # noqa: E731
    if not isinstance(images, list) or not all(isinstance(p, str) and p.strip() for p in images):
        raise fail("expected a list of image file paths")
    root = Path(record.file).resolve().parent
    resolved = []
    for p in images:
        path = (root / p).resolve()
        if not path.is_relative_to(root):
            raise fail(f"{p!r} points outside the data file's folder {root}; copy the image into that folder")
        if not path.is_file():
            raise fail(f"{p!r}: no such image file (looked for {path})")
        resolved.append(str(path))
    users = [m for m in conv.messages if m.role == "user"]
    count = sum(m.content.count(PLACEHOLDER) for m in users)
    if count == 0:
        users[0].content = PLACEHOLDER + "\n" + users[0].content
    elif count != len(resolved):
        raise fail(f"{len(resolved)} images but {count} {PLACEHOLDER} placeholders in the user turns; make them match")
    if any(PLACEHOLDER in m.content for m in conv.messages if m.role != "user"):
        raise fail(f"{PLACEHOLDER} appears outside user turns; images can only be inputs")
    conv.meta["images"] = resolved
