"""The twelve attention modules of the seed article, one paper per file, in one registry.

Importing this package registers every module; a thirteenth is one new file imported here.
"""

from __future__ import annotations

# isort: off  (the import order is the registry's order, the seed article's)
from . import se, eca, ca, cbam, sa, cc, s2mlp, simam, sk, nam, soca, gam  # noqa: F401
# isort: on
from .base import AttentionModule, ForkLayer
from .registry import (
    AttentionSpec,
    attention_aliases,
    find_attention,
    get_attention,
    list_attention,
    register_attention,
)

__all__ = [
    "AttentionModule",
    "AttentionSpec",
    "ForkLayer",
    "attention_aliases",
    "find_attention",
    "get_attention",
    "list_attention",
    "register_attention",
]
