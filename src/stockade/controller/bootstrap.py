"""Bootstrap a controller's tokens file before it starts: `stockade controller init-tokens`.

Whoever starts a controller (an operator, the lab) needs a first admin token and the
agents' tokens. This makes them without reaching into the controller's modules: the
tokens file gets each token's hash (format of `controller.auth`), and each plaintext goes
to a file of its own, 0600 from the moment it exists (`stockade.private_files`), never to
stdout or a log.

A spec names one token and where its plaintext goes: `NAME:ROLE[:HOST]=PATH`. A token
named in a spec is made anew (replacing an entry of that name); the file's other entries
are kept, unless `fresh` starts the file over with only the tokens given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from stockade.controller.auth import TokenEntry, entry_from, hash_token, new_token, read_token_file, write_token_file
from stockade.private_files import write_private


@dataclass(frozen=True)
class TokenSpec:
    name: str
    role: str
    host: str | None
    plaintext_path: Path


def parse_spec(text: str) -> TokenSpec:
    """`lab-admin:admin=admin.token`, `agent-hv1:agent:hv1=agent-hv1.token` → a TokenSpec."""
    who, sep, path = text.partition("=")
    parts = who.split(":")
    if not sep or not path or len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"--token {text!r}: expected NAME:ROLE[:HOST]=PATH, e.g. admin:admin=admin.token")
    return TokenSpec(parts[0], parts[1], parts[2] if len(parts) == 3 else None, Path(path))


def init_tokens(tokens_file: Path, specs: Sequence[TokenSpec], fresh: bool = False) -> None:
    """Make a token per spec, write the tokens file, then each plaintext to its own 0600 file.

    All specs are checked before anything is written; names must be unique."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("each token name may be given once")
    made: list[tuple[TokenSpec, str, TokenEntry]] = []
    for i, spec in enumerate(specs):
        token = new_token()
        raw = {"name": spec.name, "role": spec.role, "sha256": hash_token(token),
               **({"host": spec.host} if spec.host else {})}
        made.append((spec, token, entry_from(raw, f"--token[{i}]")))
    kept = [] if fresh or not tokens_file.exists() else [
        e for e in read_token_file(tokens_file) if e.name not in set(names)]
    write_token_file(tokens_file, [*kept, *(entry for _, _, entry in made)])
    for spec, token, _ in made:
        write_private(spec.plaintext_path, token + "\n")
