"""Atomic file writes: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed.

    A reader therefore sees either no file or the whole file, never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file owner-only; give it a normal file's mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` ({name: torch.Tensor}, copied to CPU and made contiguous) as a safetensors file, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


@contextmanager
def atomic_dir(path: str | Path, replace: bool = False):
    """Yield a temporary folder beside `path`; on success it takes the place of `path`, on error it
    is removed: a reader never sees a half-written results folder.

    `path` must be absent or an empty folder; with `replace`, any folder (the caller has checked that
    it may go), removed just before the rename.
    """
    target = Path(path).resolve()
    if target.exists() and (not target.is_dir() or (not replace and any(target.iterdir()))):
        raise FileExistsError(f"{str(path)!r} exists and is not an empty folder; choose a new output folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the folder owner-only; give it a normal folder's mode
        if target.exists() and replace:
            shutil.rmtree(target)
        elif target.exists():
            target.rmdir()  # empty, checked above
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_jsonl(path: str | Path, error: type[Exception]) -> list[tuple[object, str]]:
    """(record, "path:line") for every JSON line of `path`; blank lines and lines starting with "#"
    are skipped. A line that is not JSON raises `error` naming it."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            records.append((json.loads(line), f"{path}:{number}"))
        except json.JSONDecodeError as err:
            raise error(f"{path}:{number}: not valid JSON ({err.msg}); one JSON object per line") from None
    return records
