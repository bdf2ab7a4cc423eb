"""Reading the user's files: multi-document YAML (or JSON), a directory of them, or stdin.

YAML aliases make a small file stand for a huge document (the "billion laughs": nine anchors,
each listing the previous one ten times, are a billion strings). PyYAML shares one object per
anchor, so loading is cheap, but sending it as JSON writes every copy out — the CLI would
build gigabytes before the controller's body limit could refuse it. So each document's size
*as expanded* is computed on the composed node graph (each node once, memoised) before it is
constructed, and a file whose expansion exceeds the controller's body limit is refused here,
naming the file and document.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from stockade.errors import ValidationError

# The controller refuses bodies over 16 MiB (controller.config.DEFAULT_MAX_BODY); the JSON of
# the documents is what makes up a request body.
MAX_EXPANDED_BYTES = 16 * 1024 * 1024


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


class _SelfReference(Exception):
    """An alias inside the node it names: the document would be infinite."""


def _expanded_size(node: Node, memo: dict[int, int], visiting: set[int]) -> int:
    """About how many bytes `node` takes as JSON with every alias written out (a lower bound:
    quotes, commas and braces, no escapes). Each node is computed once, so an alias bomb costs
    as little to measure as it does to compose."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in visiting:
        raise _SelfReference()
    visiting.add(key)
    if isinstance(node, ScalarNode):
        size = len(node.value) + 2
    elif isinstance(node, SequenceNode):
        size = 2 + sum(_expanded_size(child, memo, visiting) + 1 for child in node.value)
    elif isinstance(node, MappingNode):
        size = 2 + sum(_expanded_size(k, memo, visiting) + _expanded_size(v, memo, visiting) + 2
                       for k, v in node.value)
    else:
        size = 0
    visiting.discard(key)
    memo[key] = size
    return size


def _load_all(text: str, source: str, limit: int) -> list[Any]:
    """`yaml.safe_load_all`, refusing documents whose expansion is over `limit` bytes in total."""
    loader = yaml.SafeLoader(text)
    docs: list[Any] = []
    total = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            try:
                total += _expanded_size(node, {}, set())
            except _SelfReference:
                raise ValidationError.single(f"{source} document {len(docs) + 1}", "",
                                             "refers to itself through an alias (a recursive document)") from None
            if total > limit:
                raise ValidationError.single(f"{source} document {len(docs) + 1}", "",
                                             f"expands (YAML aliases written out) to more than {limit} bytes, "
                                             "over the controller's request limit: refused before sending")
            docs.append(loader.construct_document(node))
    finally:
        loader.dispose()
    return docs


def _parse(text: str, source: str, limit: int = MAX_EXPANDED_BYTES) -> list[dict[str, Any]]:
    try:
        docs = [d for d in _load_all(text, source, limit) if d is not None]
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
