"""The pipeline's report: `metrics.json` rendered as `report.md` with plots.

Plots (PNG, beside the markdown):
- `affect.png`: predicted valence and arousal per policy with 95% intervals (and the true world's, when known);
- `diversity.png`: the diversity profile per policy (coverage, entropy, Gini, intra-list diversity, repeat rate);
- `track_frequency.png`: how often each track was recommended, tracks sorted by count (a collapsed policy drops to
  zero after a handful of tracks; a diverse one stays flat);
- `utility_true_vs_predicted.png` (synthetic world only): each policy's predicted against true utility.
"""

from __future__ import annotations

import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DIVERSITY_KEYS = ("coverage", "entropy", "gini", "ild", "repeat_rate")
REPORT_FILE, METRICS_FILE = "report.md", "metrics.json"


def _strict(value):
    """`value` with numpy scalars and arrays as Python values and NaN / infinite floats as None (null), so
    metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _interval(entry: dict) -> tuple[float, float, float]:
    low, high = entry["ci95"]
    return entry["mean"], entry["mean"] - low, high - entry["mean"]


def plot_affect(policies: dict, path: str) -> None:
    names = list(policies)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, outcome in zip(axes, ("valence", "arousal")):
        x = np.arange(len(names))
        sources = [("predicted", "world model")] + ([("oracle", "true world")] if any(
            "oracle" in policies[n] for n in names) else [])
        width = 0.8 / len(sources)
        for s, (key, label) in enumerate(sources):
            stats = [_interval(policies[n][key][outcome]) if key in policies[n] else (np.nan, 0, 0) for n in names]
            means, low, high = map(np.array, zip(*stats))
            ax.bar(x + (s - (len(sources) - 1) / 2) * width, means, width, yerr=[low, high], capsize=3, label=label)
        ax.set_xticks(x, names)
        ax.set_title(f"{outcome} after listening (mean, 95% CI)")
        finite = [v for n in names for k in ("predicted", "oracle") if k in policies[n]
                  for v in policies[n][k][outcome]["ci95"] if np.isfinite(v)]  # NaN: one prefix, no interval
        if finite:
            span = max(finite) - min(finite)
            ax.set_ylim(min(finite) - span - 0.01, max(finite) + span + 0.01)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_diversity(policies: dict, path: str) -> None:
    names = list(policies)
    fig, axes = plt.subplots(1, len(DIVERSITY_KEYS), figsize=(3.0 * len(DIVERSITY_KEYS), 3.2))
    for ax, key in zip(axes, DIVERSITY_KEYS):
        ax.bar(names, [policies[n]["diversity"][key] for n in names], color="tab:green")
        ax.set_title(key)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_track_frequency(track_counts: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, counts in track_counts.items():
        counts = np.asarray(counts, dtype=float)
        share = counts / max(counts.sum(), 1.0)
        ax.plot(np.arange(1, len(share) + 1), share, label=name)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlabel("track rank (most recommended first)")
    ax.set_ylabel("share of recommendations")
    ax.set_title("track-frequency curves")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_true_vs_predicted(policies: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, entry in policies.items():
        if "oracle" not in entry:
            continue
        p, pl, ph = _interval(entry["predicted"]["utility"])
        t, tl, th = _interval(entry["oracle"]["utility"])
        ax.errorbar(p, t, xerr=[[pl], [ph]], yerr=[[tl], [th]], fmt="o", capsize=3, label=name)
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], "k--", lw=0.8, label="predicted = true")
    ax.set_xlabel("predicted utility (world model)")
    ax.set_ylabel("true utility (synthetic world)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(entry: dict | None) -> str:
    if entry is None:
        return "-"
    low, high = entry["ci95"]
    return f"{entry['mean']:.3f} [{low:.3f}, {high:.3f}]"


_FIDELITY_COLUMNS = {"n": "plays", "r2": "R²", "pearson_r": "Pearson r", "mae": "MAE", "coverage90": "90% coverage",
                     "auc": "AUC", "ece": "calibration error", "listened_auc": "listened-through AUC"}


def _world_model_lines(wm: dict) -> list[str]:
    """The world model's fidelity as a table (outcome x metric); other entries (e.g. ensemble size) as lines."""
    lines = [f"- {key}: {value}" for key, value in wm.items() if not isinstance(value, dict)]
    for part, outcomes in wm.items():
        if not isinstance(outcomes, dict):
            continue
        columns = [c for c in _FIDELITY_COLUMNS if any(c in m for m in outcomes.values() if isinstance(m, dict))]
        lines += ["", f"{part} listeners:" if part in ("test", "valid", "train") else f"{part}:", "",
                  "| outcome | " + " | ".join(_FIDELITY_COLUMNS[c] for c in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for outcome, values in outcomes.items():
            cells = [_number(values.get(c)) if isinstance(values, dict) else "-" for c in columns]
            lines.append(f"| {outcome} | " + " | ".join(cells) + " |")
    return lines


def _number(value) -> str:
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return f"{float(value):.3f}"
    return "-"  # None, NaN, infinite or not a number


def render_markdown(metrics: dict, plots: dict) -> str:
    policies = metrics["policies"]
    lines = ["# amrs pipeline report", ""]
    data = metrics.get("data", {})
    if data:
        lines += ["## Data", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in data.items()] + [""]
    wm = metrics.get("world_model", {})
    if wm:
        lines += ["## World model (held-out listeners)", "", *_world_model_lines(wm), ""]
    lines += ["## Policies (world-model rollouts from held-out prefixes)", "",
              "Mean over prefixes with 95% intervals.", "",
              "| policy | engagement | like | valence | arousal | utility | utility gain vs bc | KL to bc |",
              "|---|---|---|---|---|---|---|---|"]
    for name, entry in policies.items():
        p = entry["predicted"]
        kl = entry.get("kl_to_bc")
        lines.append(f"| {name} | {_fmt(p['engagement'])} | {_fmt(p['rating'])} | {_fmt(p['valence'])} | "
                     f"{_fmt(p['arousal'])} | {_fmt(p['utility'])} | {_fmt(entry.get('utility_gain_vs_bc'))} | "
                     f"{'-' if kl is None else f'{kl:.3f}'} |")
    if any("oracle" in e for e in policies.values()):
        lines += ["", "### The same recommendations in the true synthetic world", "",
                  "| policy | engagement | like | valence | arousal | true utility | true gain vs bc | "
                  "utility gap (predicted - true) |", "|---|---|---|---|---|---|---|---|"]
        for name, entry in policies.items():
            if "oracle" in entry:
                o = entry["oracle"]
                lines.append(f"| {name} | {_fmt(o['engagement'])} | {_fmt(o['rating'])} | {_fmt(o['valence'])} | "
                             f"{_fmt(o['arousal'])} | {_fmt(o['utility'])} | "
                             f"{_fmt(entry.get('oracle_utility_gain_vs_bc'))} | {entry['gap']['utility']:+.3f} |")
    lines += ["", "### Diversity", "", "| policy | " + " | ".join(DIVERSITY_KEYS) + " |",
              "|---|" + "---|" * len(DIVERSITY_KEYS)]
    for name, entry in policies.items():
        lines.append(f"| {name} | " + " | ".join(f"{entry['diversity'][k]:.3f}" for k in DIVERSITY_KEYS) + " |")
    lines.append("")
    for title, file in plots.items():
        lines += [f"![{title}]({file})", ""]
    return "\n".join(lines)


def write_report(metrics: dict, track_counts: dict, output_dir: str) -> dict:
    """Write `metrics.json`, the plots and `report.md` into `output_dir`; returns the plot files by title."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
        json.dump(_strict(metrics), f, indent=2, allow_nan=False)
    policies = metrics["policies"]
    plots = {"predicted valence and arousal": "affect.png", "diversity profile": "diversity.png",
             "track-frequency curves": "track_frequency.png"}
    plot_affect(policies, os.path.join(output_dir, plots["predicted valence and arousal"]))
    plot_diversity(policies, os.path.join(output_dir, plots["diversity profile"]))
    plot_track_frequency(track_counts, os.path.join(output_dir, plots["track-frequency curves"]))
    if any("oracle" in e for e in policies.values()):
        plots["predicted against true utility"] = "utility_true_vs_predicted.png"
        plot_true_vs_predicted(policies, os.path.join(output_dir, plots["predicted against true utility"]))
    with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
        f.write(render_markdown(metrics, plots))
    return plots


__all__ = ["METRICS_FILE", "REPORT_FILE", "render_markdown", "write_report"]
