"""Model cards: YAML front matter + the model's prose from `model_cards/<model_type>.md` + the figures of the run.

The front matter follows the Hub's model-card metadata (`library_name: amrs_hf`, tags, datasets, `base_model` as a
repo id, never a local path). The figures are the evaluation results of the run that made the checkpoint, flattened
into a table (`section / metric | value`), so a card never shows numbers from another run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

PROSE_DIR = Path(__file__).resolve().parents[3] / "model_cards"  # the repository's model_cards/ (source checkout)


def _flatten(figures: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if set(value) >= {"mean", "ci95"}:
                low, high = value["ci95"]
                rows.append((name, f"{value['mean']:.4f} [{low:.4f}, {high:.4f}]"))
            else:
                rows += _flatten(value, f"{name} / ")
        elif isinstance(value, float):
            rows.append((name, "nan" if math.isnan(value) else f"{value:.4f}"))
        elif isinstance(value, (int, str, bool)) or value is None:
            rows.append((name, value))
        else:
            rows.append((name, json.dumps(value, default=str)))
    return rows


def render_card(model_type: str, title: str, figures: dict | None = None, *, datasets: list[str] | None = None,
                base_model: str | None = None, tags: list[str] | None = None, summary: str = "") -> str:
    """The card's markdown. `base_model` must be a Hub repo id (a local path is refused)."""
    if base_model is not None and (Path(base_model).exists() or base_model.startswith((".", "/"))):
        raise ValueError(f"base_model must be a Hub repo id (owner/name), not a local path: {base_model!r}")
    data = ModelCardData(library_name="amrs_hf", tags=["amrs_hf", model_type, *(tags or [])], datasets=datasets,
                         base_model=base_model)
    prose_file = PROSE_DIR / f"{model_type}.md"
    prose = prose_file.read_text().strip() if prose_file.exists() else ""
    if prose.startswith("# "):  # one top-level heading, the caller's title: the prose's own gives way
        prose = prose.partition("\n")[2].strip()
    lines = [f"# {title}", ""]
    if summary:
        lines += [summary, ""]
    if prose:
        lines += [prose, ""]
    if figures:
        lines += ["## Figures of this run", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in _flatten(figures)]
        lines.append("")
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def write_card(directory, model_type: str, title: str, figures: dict | None = None, **kwargs) -> Path:
    """Write the card as `directory/README.md` (checked by `huggingface_hub.ModelCard`)."""
    text = render_card(model_type, title, figures, **kwargs)
    card = ModelCard(text)
    path = Path(directory) / "README.md"
    card.save(path)
    return path


__all__ = ["render_card", "write_card"]
