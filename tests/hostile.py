"""Hostile and broken inputs, made on the spot: the catalogue ``test_hostile.py`` feeds to
every verb. Each maker writes one file into a folder and returns its path. Pickles that would
run code name ``touch MARKER``: a test passes only if that marker never appears."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import torch
import yaml

MARKER = "PWNED"
Maker = Callable[[Path], Path]


class _Call:
    """Pickles as a call of ``fn(*args)``: what a malicious checkpoint asks the loader to do."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.fn, self.args


class _CallResult(_Call):
    """A call whose result the pickle then calls (pickle wants it callable; it never runs here)."""

    def __call__(self, *args: object) -> None:
        raise AssertionError("only pickled")


def _touch(folder: Path) -> str:
    return f"touch {folder / MARKER}"


def _good_archive() -> bytes:
    buf = io.BytesIO()
    torch.save({"model.0.conv.weight": torch.zeros(16, 3, 6, 6)}, buf)
    return buf.getvalue()


def _rewrite(folder: Path, name: str, change: Callable[[str, bytes], bytes], extra: dict[str, bytes] | None = None,
             deflate: bool = False) -> Path:
    """A real torch.save archive with its entries changed (persistent ids, added members)."""
    src = zipfile.ZipFile(io.BytesIO(_good_archive()))
    out = folder / name
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            z.writestr(info.filename, change(info.filename, src.read(info.filename)))
        for member, data in (extra or {}).items():
            z.writestr(f"archive/{member}", data, compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    return out


def _save(folder: Path, name: str, obj: object) -> Path:
    torch.save(obj, folder / name)
    return folder / name


def _dill_save(folder: Path, name: str, obj: object) -> Path:
    """torch.save with dill, as some forks save: functions and modules pickled by value."""
    import dill

    torch.save(obj, folder / name, pickle_module=dill)
    return folder / name


def _pickle(folder: Path, name: str, obj: object, protocol: int = 2) -> Path:
    (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    return folder / name


def pickle_text(text: str) -> bytes:
    """A str as the BINUNICODE opcode, for pickles written by hand."""
    return b"X" + len(text.encode()).to_bytes(4, "little") + text.encode()


def archive_with_pickle(folder: Path, name: str, data: bytes) -> Path:
    """A torch.save archive whose data.pkl is ``data``: pickles written as opcodes, so that the
    globals they name need not exist in this process (ultralytics is a test-only install)."""
    return _rewrite(folder, name, lambda member, b: data if member.endswith("data.pkl") else b)


def _named_call(folder: Path, module: str, name: str, arg: str) -> Path:
    """``{'model': module.name(arg)}``."""
    call = b"c" + f"{module}\n{name}\n".encode() + pickle_text(arg) + b"\x85R"
    return archive_with_pickle(folder, "a.pt", b"\x80\x02}" + pickle_text("model") + call + b"s.")


def _param(data: object) -> _Call:
    return _Call(torch._utils._rebuild_parameter, data, False, collections.OrderedDict())


CHECKPOINTS: dict[str, tuple[Maker, str]] = {
    # code execution: the pickle names a callable that would run a command
    "os.system in a torch zip": (lambda d: _save(d, "a.pt", {"model": _Call(os.system, _touch(d))}), "posix.system"),
    "os.system in a plain pickle": (lambda d: _pickle(d, "a.pt", {"model": _Call(os.system, _touch(d))}), "posix.system"),
    "builtins.exec, pickle protocol 4": (lambda d: _pickle(d, "a.pt", _Call(builtins.exec, f"import os; os.system('{_touch(d)}')"), 4), "builtins.exec"),
    "builtins.eval in a torch zip": (lambda d: _save(d, "a.pt", {"ema": _Call(builtins.eval, f"__import__('os').system('{_touch(d)}')")}), "builtins.eval"),
    "subprocess.Popen": (lambda d: _save(d, "a.pt", {"model": _Call(__import__("subprocess").Popen, ["touch", str(d / MARKER)])}), "Popen"),
    # dill (forks that save with it): code by value arrives as inert markers; calling one runs
    # nothing; a module fetched by name and a function taken from it are markers too
    "dill: a lambda called at load": (lambda d: _dill_save(d, "a.pt", {"model": _Call(
        eval("lambda c: __import__('os').system(c)"), _touch(d))}), "neither a model object"),  # noqa: S307
    "dill: getattr(os, 'system') called": (lambda d: _dill_save(d, "a.pt", {"model": _Call(
        _CallResult(getattr, os, "system"), _touch(d))}), "neither a model object"),
    "dill: os.system by reference": (lambda d: _dill_save(d, "a.pt", {"model": _Call(os.system, _touch(d))}),
                                     "posix.system"),
    # dill's pickle of a function whose module was not importable carries the module's globals,
    # its spec and loader among them: inert parts, named in the warning; a loader's method
    # fetched and called, or import machinery's functions, stay refused
    "dill: a module's loader asked to load it": (lambda d: _named_call(
        d, "_frozen_importlib_external", "SourceFileLoader.load_module", "models.evil"),
        "_frozen_importlib_external.SourceFileLoader.load_module"),
    "dill: a loader's method fetched and called": (lambda d: _dill_save(d, "a.pt", {"model": _Call(
        _CallResult(getattr, _loader(d), "load_module"), "evil")}), "neither a model object"),
    "import machinery's own loader function": (lambda d: _named_call(d, "_frozen_importlib", "_load", "evil"),
                                               "_frozen_importlib._load"),
    # gadgets inside torch: loaders that would read or run other files
    "torch.hub.load gadget": (lambda d: _save(d, "a.pt", {"model": _Call(torch.hub.load, "x/y", "z")}), "torch.hub.load"),
    "torch.load gadget": (lambda d: _save(d, "a.pt", {"model": _Call(torch.load, str(d / "x.pt"))}), "torch.serialization.load"),
    "torch.jit.load gadget": (lambda d: _save(d, "a.pt", {"model": _Call(torch.jit.load, str(d / "x.pt"))}), "torch.jit"),
    # ultralytics: its model classes become records, but records are never called, and its
    # other code (downloads, loaders) is refused by name
    "ultralytics.utils callable": (lambda d: _named_call(d, "ultralytics.utils.downloads", "safe_download", _touch(d)),
                                   "import ultralytics.utils.downloads.safe_download"),
    "ultralytics.nn.tasks loader called": (lambda d: _named_call(d, "ultralytics.nn.tasks", "torch_safe_load", "x.pt"),
                                           "asks to call ultralytics.nn.tasks.torch_safe_load"),
    "ultralytics args namespace called with arguments": (
        lambda d: _named_call(d, "ultralytics.utils", "IterableSimpleNamespace", _touch(d)),
        "asks to call ultralytics.utils.IterableSimpleNamespace"),
    # torch's own rebuilders fed the wrong things
    "Parameter wrapping a string": (lambda d: _save(d, "a.pt", {"model": {"model.0.conv.weight": _param("abc")}}), "not what it claims"),
    "Parameter wrapping a dict": (lambda d: _save(d, "a.pt", {"model": {"model.0.conv.weight": _param({"a": 1})}}), "not what it claims"),
    # tensor and zip bombs
    "tensor bomb (stride-0 view)": (lambda d: _save(d, "a.pt", {"model.0.conv.weight": torch.zeros(1).as_strided((10**5, 10**5), (0, 0))}), "tensor bomb"),
    "1000-dimensional tensor": (lambda d: _save(d, "a.pt", {"model.0.conv.weight": torch.zeros([1] * 1000)}), "1000 dimensions"),
    "zip bomb member": (lambda d: _rewrite(d, "a.pt", lambda n, b: b, {"data/99": b"\0" * (32 << 20)}, deflate=True), "zip bomb"),
    # a billion laughs of pickle's shared references (10^10 values from a few hundred bytes)
    "pickle bomb in the training options": (lambda d: _save(d, "a.pt", {"model": {"model.0.conv.weight": torch.zeros(1)},
                                                                      "opt": laughs()}), "pickle bomb"),
    "pickle bomb in a yaml row's arguments": (lambda d: _bomb_in_yaml_row(d), "pickle bomb"),
    "a dict that contains itself": (lambda d: _save(d, "a.pt", _loop()), "contains itself"),
    # broken archives
    "encrypted data.pkl": (lambda d: _encrypted(d), "encrypted"),
    "truncated archive (half)": (lambda d: _write(d, "a.pt", _good_archive()[: len(_good_archive()) // 2]), "damaged or truncated"),
    "truncated archive (end cut)": (lambda d: _write(d, "a.pt", _good_archive()[:-30]), "damaged or truncated"),
    "zip without data.pkl": (lambda d: _zip(d, "a.pt", {"x/readme.txt": b"hi"}), "no data.pkl"),
    "empty file": (lambda d: _write(d, "a.pt", b""), "not a PyTorch checkpoint"),
    "text file": (lambda d: _write(d, "a.pt", b"not a checkpoint\n"), "not a PyTorch checkpoint"),
    "random bytes": (lambda d: _write(d, "a.pt", bytes(range(256)) * 8), "not a PyTorch checkpoint"),
    # persistent-id tricks: storage keys that point outside the archive
    "storage key ../../etc/passwd": (lambda d: _rewrite(d, "a.pt", _traverse), "does not hold"),
    # shapes and containers that are not a model
    "a list of numbers": (lambda d: _save(d, "a.pt", [1, 2, 3]), "neither a model object nor a state dict"),
    "state dict with odd keys": (lambda d: _save(d, "a.pt", {"weights": torch.zeros(3)}), "unexpected key"),
}


def _loader(folder: Path) -> object:
    """A real SourceFileLoader for a file whose code would create the marker if it ever ran."""
    import importlib.machinery

    evil = folder / "evil.py"
    evil.write_text(f"open({str(folder / MARKER)!r}, 'w').close()\n")
    return importlib.machinery.SourceFileLoader("evil", str(evil))


def laughs(levels: int = 10) -> list:
    """Ten references to one list of ten references to ... : 10^levels values when walked."""
    x: list = [0] * 10
    for _ in range(levels - 1):
        x = [x] * 10
    return x


def _loop() -> dict:
    d: dict = {"model": {"model.0.conv.weight": torch.zeros(1)}}
    d["opt"] = d
    return d


def _bomb_in_yaml_row(folder: Path) -> Path:
    """A fork's training checkpoint whose yaml has a billion laughs as a Conv row's arguments."""
    import yolov5_standin as y5
    from attn_deploy.models.zoo import model_config

    with y5.installed():
        model = y5.DetectionModel(model_config("yolov5n"))
        model.yaml["backbone"][0][3] = laughs()
        return _save(folder, "a.pt", y5.training_checkpoint(model))


def _encrypted(folder: Path) -> Path:
    """A torch.save archive whose data.pkl carries the zip's encrypted flag (bit 0), set in its
    local header and its central directory entry (zipfile writes no encrypted members)."""
    data = bytearray(_good_archive())
    for sig, flags, name_len, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = data.find(sig)
        while at >= 0:
            n = int.from_bytes(data[at + name_len:at + name_len + 2], "little")
            if data[at + name_at:at + name_at + n].endswith(b"data.pkl"):
                data[at + flags] |= 0x1
            at = data.find(sig, at + 4)
    return _write(folder, "a.pt", bytes(data))


def _write(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder / name


def _zip(folder: Path, name: str, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(folder / name, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return folder / name


def _traverse(member: str, data: bytes) -> bytes:
    """Point the archive's one storage at a path outside it (the key '0' becomes ../../etc/passwd)."""
    if not member.endswith("data.pkl"):
        return data
    return data.replace(b"X\x01\x00\x00\x000", b"X\x10\x00\x00\x00../../etc/passwd")


def _cfg() -> dict:
    from attn_deploy.models.zoo import model_config

    return model_config("yolov5n")


def _yaml(folder: Path, change: Callable[[dict], None]) -> Path:
    cfg = _cfg()
    change(cfg)
    (folder / "m.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "m.yaml"


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda c: c.__setitem__(key, value)


def _row(i: int, j: int, value: object) -> Callable[[dict], None]:
    return lambda c: c["backbone"][i].__setitem__(j, value)


def _laughs(folder: Path) -> Path:
    """A billion laughs: nine levels of ten aliases each, 10^9 leaves in a Conv's args."""
    text = "nc: 80\ndepth_multiple: 0.33\nwidth_multiple: 0.25\nanchors: 3\na: &a [1,1,1,1,1,1,1,1,1,1]\n"
    for x, y in zip("bcdefghi", "abcdefgh"):
        text += f"{x}: &{x} [" + ",".join([f"*{y}"] * 10) + "]\n"
    (folder / "m.yaml").write_text(text + "backbone: [[-1, 1, Conv, *i]]\nhead: []\n")
    return folder / "m.yaml"


def _text(folder: Path, text: str | bytes) -> Path:
    p = folder / "m.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


EVAL = "__import__('os').system('touch PWNED')"
YAMLS: dict[str, tuple[Maker, str]] = {
    "nc is a string": (lambda d: _yaml(d, _set("nc", "eighty")), "'nc' must be a class count"),
    "nc is eval bait": (lambda d: _yaml(d, _set("nc", EVAL)), "'nc' must be a class count"),
    "nc is zero": (lambda d: _yaml(d, _set("nc", 0)), "'nc' must be a class count"),
    "depth_multiple is a string": (lambda d: _yaml(d, _set("depth_multiple", "x")), "'depth_multiple' must be a number"),
    "width_multiple is a list": (lambda d: _yaml(d, _set("width_multiple", [1])), "'width_multiple' must be a number"),
    "anchors are strings": (lambda d: _yaml(d, _set("anchors", [["a", "b"]])), "'anchors' must be"),
    "module name is eval bait": (lambda d: _yaml(d, _row(0, 2, EVAL)), "unknown module"),
    "argument is eval bait": (lambda d: _yaml(d, _row(0, 3, [EVAL, 6, 2, 2])), "output channels must be a number"),
    "a billion channels": (lambda d: _yaml(d, _row(0, 3, [10**9, 6, 2, 2])), "output channels must be a number"),
    "a kernel of 100000": (lambda d: _yaml(d, _row(0, 3, [64, 100000, 2, 2])), "parameters"),
    "a billion repeats": (lambda d: _yaml(d, _row(2, 1, 10**9)), "'number'"),
    "from points forward": (lambda d: _yaml(d, _row(1, 0, 7)), "does not exist yet"),
    "billion laughs": (_laughs, "yaml bomb"),
    "concat of two resolutions": (lambda d: _yaml(d, lambda c: c["head"].__setitem__(2, [[-1, 2], 1, "Concat", [1]])), "does not run"),
    "no Detect at the end": (lambda d: _yaml(d, lambda c: c["head"].__setitem__(-1, [[17, 20, 23], 1, "Conv", [64, 3, 1]])), "must be Detect"),
    "recursive alias": (lambda d: _text(d, "nc: 80\nanchors: 3\nbackbone: &b [*b]\nhead: []\n"), "yaml"),
    "not a mapping": (lambda d: _text(d, "- 1\n- 2\n"), "does not hold a model definition"),
    "not yaml": (lambda d: _text(d, "nc: [1, 2\n"), "not valid yaml"),
    "binary": (lambda d: _text(d, b"\xff\xfe\x00\x01" * 10), "not a text file"),
    "python tag": (lambda d: _text(d, f"nc: !!python/object/apply:os.system ['{EVAL}']\n"), "not valid yaml"),
    "too large": (lambda d: _text(d, "# " + "x" * (2 << 20) + "\n"), "too large"),
}
