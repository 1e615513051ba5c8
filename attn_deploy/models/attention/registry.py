"""The attention registry: one short key per paper, plus the class names forks write in yaml.

A yaml row such as ``[-1, 1, CoordAtt, [1024]]`` names a class the way a fork spells it;
``get_attention`` resolves every such spelling (case-insensitively) to one of our modules.
A fork's class that is a fixed variant of one (ultralytics' ``ChannelAttention``: CBAM's
channel half) is a registered subclass that sets the variant's keywords, since a yaml row
carries none: its name resolves to the key's spec with that subclass as ``cls``.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field, replace
from typing import Callable, TypeVar

from torch import nn

from attn_deploy.errors import UserError

M = TypeVar("M", bound=type[nn.Module])


@dataclass(frozen=True)
class AttentionSpec:
    """What the registry knows of one attention module.

    ``yaml_args`` names, in order, the keyword arguments that a yaml row's positional
    arguments after the channel count map to (``None`` skips one); ``alias_args`` overrides
    that for a fork's class whose constructor orders its arguments differently.
    """

    key: str
    cls: type[nn.Module]
    aliases: tuple[str, ...]
    yaml_args: tuple[str | None, ...] = ()
    alias_args: dict[str, tuple[str | None, ...]] = field(default_factory=dict)

    def args_for(self, name: str) -> tuple[str | None, ...]:
        for alias, args in self.alias_args.items():
            if alias.lower() == name.lower():
                return args
        return self.yaml_args


_REGISTRY: dict[str, AttentionSpec] = {}
_NAMES: dict[str, str] = {}  # lower-cased key or alias -> key
_VARIANTS: dict[str, type[nn.Module]] = {}  # lower-cased fork class name -> the subclass fixing its variant


def register_attention(
    key: str,
    aliases: tuple[str, ...] = (),
    yaml_args: tuple[str | None, ...] = (),
    alias_args: dict[str, tuple[str | None, ...]] | None = None,
) -> Callable[[M], M]:
    """Class decorator adding an attention module under ``key`` and its fork aliases."""

    def wrap(cls: M) -> M:
        spec = AttentionSpec(key, cls, tuple(aliases), tuple(yaml_args), dict(alias_args or {}))
        names = {key.lower(), cls.__name__.lower(), *(a.lower() for a in aliases)}
        taken = sorted(n for n in names if _NAMES.get(n, key) != key)
        if key in _REGISTRY or taken:
            raise ValueError(f"attention {key!r} registered twice (names taken: {taken or [key]})")
        _REGISTRY[key] = spec
        _NAMES.update({n: key for n in names})
        return cls

    return wrap


def register_variant(key: str, name: str) -> Callable[[M], M]:
    """Class decorator: the fork's class ``name`` builds this subclass of ``key``'s module."""

    def wrap(cls: M) -> M:
        spec = _REGISTRY.get(key)
        if spec is None or not issubclass(cls, spec.cls) or name.lower() in _NAMES:
            raise ValueError(f"variant {name!r} of {key!r}: unknown key, not a subclass, or the name is taken")
        _REGISTRY[key] = replace(spec, aliases=(*spec.aliases, name))
        _NAMES[name.lower()] = key
        _VARIANTS[name.lower()] = cls
        return cls

    return wrap


def find_attention(name: str) -> AttentionSpec | None:
    """The spec for a key or alias, or None when the name is not an attention module."""
    key = _NAMES.get(name.lower())
    if key and name.lower() in _VARIANTS:
        return replace(_REGISTRY[key], cls=_VARIANTS[name.lower()], yaml_args=(), alias_args={})
    return _REGISTRY[key] if key else None


def get_attention(name: str) -> AttentionSpec:
    """The spec for a key or alias; a user error listing close matches otherwise."""
    spec = find_attention(name)
    if spec is None:
        close = difflib.get_close_matches(name.lower(), list(_NAMES), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(_REGISTRY)}"
        raise UserError(f"unknown attention module {name!r}", hint)
    return spec


def list_attention(pattern: str = "*") -> list[str]:
    """Registered keys in registration order, optionally filtered by a glob pattern."""
    return [k for k in _REGISTRY if fnmatch.fnmatch(k, pattern)]


def attention_aliases() -> dict[str, tuple[str, ...]]:
    """Every key with the class names that resolve to it."""
    return {k: tuple(dict.fromkeys((s.cls.__name__, *s.aliases))) for k, s in _REGISTRY.items()}
