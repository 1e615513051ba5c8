"""Writing outputs so that a reader never sees half a file (temporary file, then rename), reading
yaml safely, and keeping what libraries print off the terminal (``quiet``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from attn_deploy.errors import UserError, one_line


def check_writable(path: str | Path) -> Path:
    """Refuse an output that cannot be created, before any work is spent on it."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"cannot write {p}: it is a folder")
    if p.exists() and not p.is_file() or p.is_symlink() and not p.is_file():
        # a device, FIFO or socket (/dev/full, /dev/stdout): the rename would replace the node itself
        raise UserError(f"cannot write {p}: it exists and is not a regular file")
    if not p.parent.is_dir():
        raise UserError(f"cannot write {p}: folder {p.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:64]}.", suffix=".probe", dir=p.parent)
    except OSError as e:
        raise UserError(f"cannot write in {p.parent}: {e.strerror or type(e).__name__}") from e
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)
    return p


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    p = Path(path)
    check_writable(p)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:64]}.", suffix=".part", dir=p.parent)
    except OSError as e:
        raise UserError(f"cannot write {p}: {e.strerror or type(e).__name__}") from e
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {p}: {e.strerror or type(e).__name__}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


@contextlib.contextmanager
def all_or_nothing() -> Iterator[list[Path]]:
    """Outputs that belong together: each written path is appended to the yielded list, and
    if anything fails before the block ends, every one of them is removed again."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


MAX_YAML_BYTES = 1 << 20  # a model or data yaml is a few kB; a megabyte is already generous
MAX_YAML_LEAVES = 100_000  # what its anchors and aliases may expand to (yolov5x.yaml: ~250)


def read_yaml(path: str | Path, what: str) -> Any:
    """A yaml file, read safely: size-capped, ``yaml.safe_load`` (no tags that run code), and
    refused when its aliases expand to more than MAX_YAML_LEAVES values ("billion laughs")."""
    import yaml

    p = Path(path)
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{p} is {p.stat().st_size // 1024} KiB: too large for a {what} (at most 1 MiB)")
        doc = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {what} {p}: {e.strerror or type(e).__name__}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{p} is not a text file (a {what} is UTF-8 yaml)") from e
    except yaml.YAMLError as e:
        raise UserError(f"{p} is not valid yaml: {one_line(str(e), 100)}", detail=str(e)) from e
    except RecursionError as e:
        raise UserError(f"{p}: yaml nested too deeply for a {what}") from e
    check_expansion(doc, str(p))
    return doc


def check_expansion(
    doc: Any, where: str, limit: int = MAX_YAML_LEAVES, depth_limit: int = 64,
    children: Callable[[Any], list[Any] | None] | None = None, what: str = "its aliases", kind: str = "yaml",
) -> int:
    """How many values ``doc`` holds once shared references are expanded (a yaml's aliases, a
    pickle's memo); a user error past ``limit``, past ``depth_limit`` levels, or on a structure
    that contains itself. Linear in the distinct objects. ``children`` lists the values inside
    an object that is not a plain container (None: a leaf)."""
    sizes: dict[int, int] = {}

    def inside(x: Any) -> list[Any] | None:
        if isinstance(x, dict):
            return [*x.keys(), *x.values()]
        if isinstance(x, (list, tuple, set, frozenset)):
            return list(x)
        return children(x) if children is not None else None

    def size(x: Any, depth: int) -> int:
        items = inside(x)
        if items is None:
            return 1
        if id(x) in sizes:
            if sizes[id(x)] < 0:
                raise UserError(f"{where}: a value contains itself (a recursive {kind} reference)")
            return sizes[id(x)]
        if depth > depth_limit:
            raise UserError(f"{where}: nested more than {depth_limit} levels deep")
        sizes[id(x)] = -1
        total = 1
        for item in items:
            total += size(item, depth + 1)
            if total > limit:
                raise UserError(f"{where}: {what} expand to over {limit:,} values (a {kind} bomb?)")
        sizes[id(x)] = total
        return total

    return size(doc, 0)


def to_json(doc: Any) -> str:
    """``doc`` as strict JSON: NaN and infinities (a figure that could not be measured, an
    error that overflowed) become null, which every JSON reader takes; Python's own NaN
    token is not JSON."""
    import json
    import math

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(doc), indent=2, default=str, allow_nan=False)


@dataclass
class Captured:
    """What ``quiet`` caught: ``text`` is filled in once its block has ended."""

    text: str = ""


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """File descriptors 1 and 2 (where C++ code prints) and sys.stdout/stderr sent to a temporary
    file for the block; what arrived there is the yielded object's ``text`` afterwards."""
    log, python_side = Captured(), io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(python_side), contextlib.redirect_stderr(python_side):
                yield log
        finally:
            for fd, copy_of in zip((1, 2), saved):
                os.dup2(copy_of, fd)
                os.close(copy_of)
            sink.seek(0)
            log.text = sink.read().decode(errors="replace") + python_side.getvalue()
