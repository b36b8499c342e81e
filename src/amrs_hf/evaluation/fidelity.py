"""World-model fidelity under the strict cold-start protocol: aggregate metrics over Monte-Carlo user-disjoint
splits, render them as a markdown table beside the baselines and the AMRS paper's figures, and plot calibration.

The per-split work (training, predicting) belongs to the caller (`amrs evaluate-world-model`); this module only sees
observed outcomes and predictions: `{model name: {outcome: (mean, var or None)}}` per split.
"""

from __future__ import annotations

import numpy as np

from .metrics import outcome_metrics

# Under the same protocol on its own (private) data, the AMRS paper (arXiv 2605.28810) reports these R².
PAPER_R2 = {"valence": 0.426, "arousal": 0.379}

# (outcome, metric, label) rows of the summary table, in order.
TABLE_ROWS = (
    ("engagement", "listened_auc", "engagement AUC (listened through)"),
    ("engagement", "mae", "engagement MAE"),
    ("rating", "auc", "like AUC"),
    ("rating", "ece", "like calibration error (ECE)"),
    ("valence", "r2", "valence R²"),
    ("valence", "pearson_r", "valence Pearson r"),
    ("valence", "mae", "valence MAE"),
    ("valence", "coverage90", "valence 90% interval coverage"),
    ("arousal", "r2", "arousal R²"),
    ("arousal", "pearson_r", "arousal Pearson r"),
    ("arousal", "mae", "arousal MAE"),
    ("arousal", "coverage90", "arousal 90% interval coverage"),
)


def split_metrics(observed: dict, predictions: dict, engagement_threshold: float) -> dict:
    """{model: metrics} for one split."""
    return {name: outcome_metrics(observed, predicted, engagement_threshold) for name, predicted in predictions.items()}


def aggregate(per_split: list[dict]) -> dict:
    """Mean and standard deviation over splits of every metric: {model: {outcome: {metric: {mean, std, n}}}}."""
    out: dict = {}
    for split in per_split:
        for model, outcomes in split.items():
            for outcome, metrics in outcomes.items():
                for metric, value in metrics.items():
                    out.setdefault(model, {}).setdefault(outcome, {}).setdefault(metric, []).append(value)
    return {
        model: {
            outcome: {
                metric: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "n": len(v)}
                for metric, v in metrics.items()
            }
            for outcome, metrics in outcomes.items()
        }
        for model, outcomes in out.items()
    }


def markdown_table(summary: dict, models: list[str]) -> str:
    """Metrics (rows) x models (columns) as `mean ± std`, plus the paper's R² where it reports one."""
    header = "| metric | " + " | ".join(models) + " | AMRS paper |"
    lines = [header, "|---" * (len(models) + 2) + "|"]
    for outcome, metric, label in TABLE_ROWS:
        cells = []
        for model in models:
            stats = summary.get(model, {}).get(outcome, {}).get(metric)
            cells.append("n/a" if stats is None or np.isnan(stats["mean"]) else f"{stats['mean']:.3f} ± {stats['std']:.3f}")
        paper = f"{PAPER_R2[outcome]:.3f}" if metric == "r2" and outcome in PAPER_R2 else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(lines)


def calibration_plot(pooled: dict, path: str, num_bins: int = 10) -> None:
    """Reliability of the like probability and coverage of the valence/arousal intervals, pooled over splits.

    `pooled`: {model: {"rating": (y, prob), "valence": (y, mean, var), "arousal": (y, mean, var)}}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    edges = np.linspace(0, 1, num_bins + 1)
    levels = np.linspace(0.1, 0.95, 18)
    for model, data in pooled.items():
        y, prob = (np.asarray(a, dtype=float) for a in data["rating"])
        keep = ~np.isnan(y)
        y, prob = y[keep], prob[keep]
        bins = np.clip(np.digitize(prob, edges) - 1, 0, num_bins - 1)
        xs = [prob[bins == b].mean() for b in range(num_bins) if (bins == b).sum() >= 5]
        ys = [y[bins == b].mean() for b in range(num_bins) if (bins == b).sum() >= 5]
        axes[0].plot(xs, ys, marker="o", label=model)
        for ax, outcome in zip(axes[1:], ("valence", "arousal")):
            if outcome not in data or data[outcome][2] is None:
                continue
            y, mean, var = (np.asarray(a, dtype=float) for a in data[outcome])
            keep = ~np.isnan(y)
            half = np.sqrt(var[keep])[None] * norm.ppf(0.5 + levels / 2)[:, None]
            covered = (np.abs(y[keep] - mean[keep])[None] <= half).mean(axis=1)
            ax.plot(levels, covered, marker=".", label=model)
    axes[0].set(title="like: reliability", xlabel="predicted like probability", ylabel="observed like rate")
    for ax, outcome in zip(axes[1:], ("valence", "arousal")):
        ax.set(title=f"{outcome}: interval coverage", xlabel="nominal coverage", ylabel="observed coverage")
        ax.axvline(0.9, color="grey", lw=0.5, ls=":")
    for ax in axes:
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    fig.suptitle("World-model calibration on held-out listeners (pooled over cold-start splits)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["PAPER_R2", "aggregate", "calibration_plot", "markdown_table", "split_metrics"]
