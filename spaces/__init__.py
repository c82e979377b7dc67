"""Search spaces. Add one: a module with a SearchSpace subclass, and one line in SPACES."""

from __future__ import annotations

from search.errors import UserError
from spaces.base import Candidate, SearchSpace
from spaces.cnn import CNNSpace
from spaces.mlp import MLPSpace

SPACES: dict[str, type[SearchSpace]] = {
    "cnn": CNNSpace,
    "mlp": MLPSpace,
}


def get_space(name: str, **settings) -> SearchSpace:
    """The space registered as ``name``, built with its fixed ``settings``."""
    try:
        cls = SPACES[name]
    except KeyError:
        raise UserError(f"unknown SPACE {name!r}; choose one of: {', '.join(SPACES)}") from None
    return cls(**settings)


__all__ = ["SPACES", "Candidate", "SearchSpace", "get_space"]
