"""Files written so that a crash never leaves half of one: atomic writes (temp file + rename) and JSON lines."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file ([] when absent); a last line cut short by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}, line {i + 1}: not JSON; the file is damaged") from None
    return out


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
