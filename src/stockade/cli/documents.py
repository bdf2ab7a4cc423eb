"""Reading the user's files: multi-document YAML (or JSON), a directory of them, or stdin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from stockade.errors import ValidationError


def read_documents(path: str) -> list[dict[str, Any]]:
    if path == "-":
        return _parse(sys.stdin.read(), "<stdin>")
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json"))
        docs: list[dict[str, Any]] = []
        for f in files:
            docs.extend(_parse(f.read_text(), str(f)))
        return docs
    if not p.exists():
        raise ValidationError.single(path, "", "no such file or directory")
    return _parse(p.read_text(), path)


def _parse(text: str, source: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ValidationError.single(source, "", f"not valid YAML: {e}") from None
    out: list[dict[str, Any]] = []
    for i, d in enumerate(docs):
        if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
            out.extend(d["items"])
        elif not isinstance(d, dict):
            raise ValidationError.single(f"{source} document {i + 1}", "", "must be a mapping (an object)")
        else:
            out.append(d)
    return out
