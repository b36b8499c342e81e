"""From listening logs to world-model inputs.

A listener's history is all of their plays in time order, across sessions (a real log's sessions can be a single
play: SiTunes' field stages are), so the model learns from what it knew about the listener before each play. Long
histories are cut into windows of at most `max_length` plays; with `overlap` > 0 each window after the first repeats
the end of the previous one as context and scores only its new plays, so every play is predicted exactly once with
up to `overlap` plays of history even across a window boundary.

Each play also carries its session inputs (`session_inputs`): whether it opens a session and the hours since the
listener's previous play. Missing outcomes, pre-states and session inputs are NaN (the model masks them). This module is not part of the remote code copied
next to the weights; it needs amrs_hf.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from amrs_hf.data.features import AudioFeatureScaler
from amrs_hf.data.schema import AUDIO_FEATURES, OUTCOMES, STATE_COLUMNS, ListeningLog, listening_order
from amrs_hf.data.tokenizer import track_token

from .configuration_world_model import AmrsWorldModelConfig
from .modeling_world_model import AmrsWorldModel

# Per-play session inputs (see `session_inputs`): whether the play opens a session, hours since the previous play.
SESSION_INPUTS = ("session_start", "time_gap")
FLOAT_INPUTS = (*OUTCOMES, *STATE_COLUMNS, *SESSION_INPUTS)
ID_INPUTS = ("track_ids", "mode_ids", "cohort_ids", "context_ids")


def context_vocabulary(log: ListeningLog, max_size: int = 256) -> list[str]:
    """The most frequent context strings of a (training) log, ties broken alphabetically."""
    counts = pd.Series(log.plays["context"]).dropna().value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    return list(counts.index[:max_size])


PLAY_COUNT_FEATURE = "log_train_plays"  # log(1 + the track's plays in the training log), an optional track feature


def world_model_config(log: ListeningLog, tokenizer, play_count_feature: bool = False,
                       **architecture) -> AmrsWorldModelConfig:
    """A config whose vocabularies match `tokenizer` and the (training) log's contexts. `play_count_feature` adds
    `PLAY_COUNT_FEATURE` to the track features (see `set_catalogue`)."""
    architecture.setdefault("context_vocab", context_vocabulary(log))
    return AmrsWorldModelConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        unk_token_id=tokenizer.unk_token_id,
        audio_features=list(AUDIO_FEATURES) + ([PLAY_COUNT_FEATURE] if play_count_feature else []),
        **architecture,
    )


def set_catalogue(model: AmrsWorldModel, catalogue: pd.DataFrame, tokenizer, play_log: ListeningLog | None = None
                  ) -> None:
    """Store the catalogue's track features in the model, standardised with the catalogue's own statistics. The audio
    features involve no labels; where the config lists `PLAY_COUNT_FEATURE`, each track's log(1 + plays) in
    `play_log` (the training listeners' log: what a recommender knows of a track's popularity, nothing of the held-out
    listeners) is added, so the model can tell a rarely played track from a popular one without its ID embedding."""
    if PLAY_COUNT_FEATURE in model.config.audio_features:
        if play_log is None:
            raise ValueError(f"this config uses the {PLAY_COUNT_FEATURE!r} track feature: pass play_log (the "
                             "training log whose play counts it holds)")
        counts = play_log.plays_frame()["track_id"].value_counts()
        catalogue = catalogue.assign(**{PLAY_COUNT_FEATURE: np.log1p(
            catalogue["track_id"].map(counts).fillna(0).to_numpy(dtype=float))})
    scaler = AudioFeatureScaler.fit(catalogue, model.config.audio_features)
    features = np.zeros((model.config.vocab_size, len(scaler.names)))
    ids = tokenizer.convert_tokens_to_ids([track_token(t) for t in catalogue["track_id"]])
    features[ids] = scaler.transform(catalogue)
    model.set_catalogue_features(torch.tensor(features), torch.tensor(scaler.mean), torch.tensor(scaler.std))


def carry_mood_forward(plays: pd.DataFrame) -> pd.DataFrame:
    """Where a play has no pre-listening report, take the mood reported after the previous play of the same session
    (mood carries over between consecutive tracks; a rollout feeds its sampled post-mood forward the same way).
    `plays` must be in listening order; a copy is returned."""
    plays = plays.copy()
    same_session = plays["session_id"].eq(plays["session_id"].shift())
    for post, pre in (("valence", "pre_valence"), ("arousal", "pre_arousal")):
        previous = plays[post].shift().where(same_session)
        plays[pre] = plays[pre].fillna(previous)
    return plays


def session_inputs(plays: pd.DataFrame) -> pd.DataFrame:
    """`session_start` and `time_gap` of every play of `plays` (in listening order, several listeners allowed); a
    copy is returned. `session_start` is 1 where the play's session differs from the listener's previous play's, 0
    where it continues it; a listener's first play in the log opens a session if its position is 0, else (the log
    starts inside a session) it is unknown (NaN). `time_gap` is the hours since the listener's previous play (from
    `timestamp`; NaN for the first play or where a timestamp is unknown); the model reads log1p of it."""
    plays = plays.copy()
    same_user = plays["user_id"].eq(plays["user_id"].shift())
    same_session = same_user & plays["session_id"].eq(plays["session_id"].shift())
    first_known = plays["position"].eq(0)
    plays["session_start"] = np.where(same_user, (~same_session).astype(float),
                                      np.where(first_known, 1.0, np.nan))
    gap = (plays["timestamp"].astype(float) - plays["timestamp"].astype(float).shift()) / 3600.0
    plays["time_gap"] = gap.where(same_user)
    return plays


def inverse_propensity_weights(log: ListeningLog, max_weight: float = 10.0) -> np.ndarray:
    """Per play of `log` (row-aligned): 1 / the logged propensity, scaled to mean 1 over the log, clipped at
    `max_weight` and scaled to mean 1 again. Weighting the training loss by them makes the logged plays stand for what
    a uniformly random recommender would have served (inverse-propensity weighting), so the model's predictions for
    tracks the logging policy rarely chose are no longer pulled toward the outcomes of the ones it favoured; the clip
    bounds the variance that costs."""
    if not max_weight >= 1:
        raise ValueError(f"max_play_weight must be >= 1 (a weight relative to the mean), got {max_weight!r}")
    propensity = np.asarray(log.plays["propensity"], dtype=np.float64)
    missing = ~(propensity > 0)  # NaN (not logged) or a non-positive value
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"inverse-propensity weighting needs the logged propensity of every play; {int(missing.sum())} of the "
            f"{len(propensity)} plays given (source {log.source}) have none (first: row {row} of those plays, column "
            "'propensity'). Turn propensity_weighting off for logs without propensities (e.g. SiTunes).")
    weights = 1.0 / propensity
    weights = np.minimum(weights / weights.mean(), max_weight)
    return (weights / weights.mean()).astype(np.float32)


def user_sequences(
    log: ListeningLog, tokenizer, config: AmrsWorldModelConfig, max_length: int = 256, overlap: int = 0,
    carry_mood: bool = True, play_weights: np.ndarray | None = None,
) -> list[dict]:
    """One dict per window of a listener's history, with lists keyed by the model's input names plus
    `play_index` (rows of `log.plays`) and `score_from` (the first position this window predicts). With
    `carry_mood`, a missing pre-state is filled from the previous play's post-state in the same session. The
    session inputs (`session_inputs`) come from the whole history, so a window's first play keeps its gap. With
    `play_weights` (one per row of `log.plays`, e.g. `inverse_propensity_weights`) each window also carries
    `play_weight`, which weighs each play's loss in training."""
    if not 0 <= overlap < max_length:
        raise ValueError(f"overlap must be in [0, max_length={max_length}), got {overlap}")
    if max_length >= config.max_position_embeddings:
        raise ValueError(f"max_length={max_length} needs max_position_embeddings > {max_length} (start token)")
    frame = log.plays_frame()
    frame["play_index"] = np.arange(len(frame))
    names = (*ID_INPUTS, *FLOAT_INPUTS, "play_index")
    if play_weights is not None:
        if len(play_weights) != len(frame):
            raise ValueError(f"play_weights has {len(play_weights)} entries for {len(frame)} plays")
        frame["play_weight"] = np.asarray(play_weights, dtype=float)
        names = (*names, "play_weight")
    frame["track_ids"] = tokenizer.convert_tokens_to_ids([track_token(t) for t in frame["track_id"]])
    frame["mode_ids"] = [config.mode_id(m) for m in frame["mode"]]
    frame["cohort_ids"] = [config.cohort_id(c) for c in frame["cohort"]]
    contexts = {c: config.context_id(c) for c in frame["context"].dropna().unique()}
    frame["context_ids"] = frame["context"].map(contexts).fillna(0).astype(int)
    frame[[*OUTCOMES, *STATE_COLUMNS]] = frame[[*OUTCOMES, *STATE_COLUMNS]].astype(float)
    order = listening_order(frame)
    order = session_inputs(order)
    if carry_mood:
        order = carry_mood_forward(order)
    windows = []
    step = max_length - overlap
    for _, plays in order.groupby("user_id", sort=True):
        columns = {name: plays[name].tolist() for name in names}
        for start in range(0, len(plays), step):
            begin = max(0, start - overlap)
            window = {name: values[begin : start + step] for name, values in columns.items()}
            window["score_from"] = start - begin
            windows.append(window)
            if start + step >= len(plays):
                break
    return windows


class WorldModelCollator:
    """Pads windows on the right into a batch of tensors; padded outcomes are NaN (masked) and padded tracks <pad>."""

    def __init__(self, pad_token_id: int, keep_index: bool = False):
        self.pad_token_id = pad_token_id
        self.keep_index = keep_index  # keep `play_index`/`score_from` (evaluation) or drop them (training)

    def __call__(self, windows: list[dict]) -> dict:
        length = max(len(w["track_ids"]) for w in windows)
        batch = {}
        for name in ID_INPUTS:
            fill = self.pad_token_id if name == "track_ids" else 0
            batch[name] = torch.tensor([w[name] + [fill] * (length - len(w[name])) for w in windows])
        for name in FLOAT_INPUTS:
            batch[name] = torch.tensor(
                [w[name] + [float("nan")] * (length - len(w[name])) for w in windows], dtype=torch.float32
            )
        if "play_weight" in windows[0]:  # padded plays weigh nothing
            batch["play_weight"] = torch.tensor(
                [w["play_weight"] + [0.0] * (length - len(w["play_weight"])) for w in windows], dtype=torch.float32)
        batch["attention_mask"] = torch.tensor([[1] * len(w["track_ids"]) + [0] * (length - len(w["track_ids"]))
                                                for w in windows])
        if self.keep_index:
            batch["play_index"] = torch.tensor([w["play_index"] + [-1] * (length - len(w["play_index"]))
                                                for w in windows])
            batch["score_from"] = torch.tensor([w["score_from"] for w in windows])
        return batch


@torch.no_grad()
def predict_plays(model, log: ListeningLog, tokenizer, max_length: int = 256, batch_size: int = 64) -> dict:
    """The model's prediction for every play of `log` from the listener's earlier plays (teacher-forced on the
    observed outcomes, as in a fidelity test). Returns outcome -> (mean, variance or None) arrays aligned with
    `log.plays`, the like probability under `rating`."""
    model.eval()
    windows = user_sequences(log, tokenizer, model.config, max_length=max_length, overlap=max_length // 2)
    collate = WorldModelCollator(tokenizer.pad_token_id, keep_index=True)
    names = ("engagement", "like_prob", "valence_mean", "valence_var", "arousal_mean", "arousal_var")
    out = {name: np.full(log.num_plays, np.nan) for name in names}
    device = next(model.parameters()).device
    for begin in range(0, len(windows), batch_size):
        batch = collate(windows[begin : begin + batch_size])
        index, score_from = batch.pop("play_index"), batch.pop("score_from")
        predictions = model(**{k: v.to(device) for k, v in batch.items()}, return_loss=False)
        scored = (index >= 0) & (torch.arange(index.shape[1])[None] >= score_from[:, None])
        for name in names:
            out[name][index[scored].numpy()] = predictions[name][scored.to(device)].float().cpu().numpy()
    return {
        "engagement": (out["engagement"], None),
        "rating": (out["like_prob"], None),
        "valence": (out["valence_mean"], out["valence_var"]),
        "arousal": (out["arousal_mean"], out["arousal_var"]),
    }


def combine_members(member_predictions: list[dict]) -> dict:
    """Per-play predictions of an ensemble from its members' `predict_plays` outputs: the mean of the members' means,
    and for valence/arousal the variance of the equal-weight mixture (mean member variance plus the variance of the
    member means, so disagreement widens the interval)."""
    out = {}
    for outcome, (_, var) in member_predictions[0].items():
        means = np.stack([p[outcome][0] for p in member_predictions])
        if var is None:
            out[outcome] = (means.mean(0), None)
        else:
            variances = np.stack([p[outcome][1] for p in member_predictions])
            out[outcome] = (means.mean(0), variances.mean(0) + means.var(0))
    return out
