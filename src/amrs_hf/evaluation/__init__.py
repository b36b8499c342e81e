"""Evaluation: fidelity metrics for the world model, baselines, and (later) policy metrics and reports."""
