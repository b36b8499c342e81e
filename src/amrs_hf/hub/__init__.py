"""Publishing: model cards now; Hub pushes and the recommender API build on them."""

from .cards import render_card, write_card

__all__ = ["render_card", "write_card"]
