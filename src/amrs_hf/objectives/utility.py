"""A multi-objective utility over world-model predictions: what a recommendation is worth to a listener in a mode.

For a candidate track c recommended to listener r whose session is in mode m (cohort k), with the world model's
predicted means (valence v, arousal a, engagement e, like probability l) and, for an ensemble, their standard
deviations across members (sigma_v, sigma_a, sigma_e, sigma_l):

    U(r, c) = A_v(v) + A_a(a) + w_e * e + w_l * l + w_d * D(r, c) - lambda * P(r, c)

Affect terms (per mode m, one for valence and one for arousal, each with weight w >= 0):

    linear  (target: null)        A(x) = w * x                                  (more is better; the AMRS paper's)
    target  (target: t, band: b)  A(x) = -w * max(0, |x - t| - b)               (0 inside [t - b, t + b])

The target form is an epsilon-insensitive (hinge) L1 distance: a candidate whose predicted affect lands within the
tolerance band is as good as any other in the band (engagement and like then decide), and outside it loses `w` per
unit of distance. `target: 0` is "lower is better" (-w * x), `target: 1` is "higher is better" up to a constant.
A mode without its own entry, and the unknown mode (id 0), use the `default` entry (none: no affect reward).

Diversity D(r, c) is a bonus per candidate (see `step_diversity`): the candidate's distance in standardised
audio-feature space to the most similar of the session's last `window` tracks, divided by sqrt(2F) (the expected
distance between two independent tracks with F z-scored features) and capped at 1, minus `repeat_penalty` if the
candidate is one of those tracks. Per sequence (`sequence_diversity`): the same scaled distance averaged over all
pairs of a list, minus `repeat_penalty` times the list's share of repeats.

Pessimism P(r, c) is a first-order bound on the standard deviation of U across ensemble members:

    P = |w_v,m| * sigma_v + |w_a,m| * sigma_a + w_e * sigma_e + w_l * sigma_l

(each term's weight is the largest slope of that term, so weight x std bounds the std it contributes). With lambda > 0
the policy prefers tracks the members agree on over tracks that only some member thinks are wonderful, i.e. it does
not chase the simulator's blind spots. Without an ensemble (no `disagreement`) P = 0.

Safety limits are hard: a rule (cohort, mode) may bound the predicted arousal jump `a - pre_arousal`
(`max_arousal_increase`), the predicted arousal itself (`max_arousal`) and the predicted valence drop
`pre_valence - v` (`max_valence_decrease`). A candidate breaking any bound that applies is infeasible: its `total`
is -inf and `feasible` is False; `unconstrained` keeps the finite sum and `violation` how far over the bound it is
(0 when feasible), so a caller that must play something can take the least-violating track. A relative bound is
checked only where the pre-state is known; use `max_arousal` for a bound that always holds. A rule's cohort or mode
`"*"` matches every cohort or mode, the unknown one (id 0) included; several matching rules all apply.

Ids follow the world model's convention (`AmrsWorldModelConfig.mode_id`): mode id i >= 1 is `modes[i - 1]`, 0 is
unknown; likewise cohorts. Pass `modes=config.modes, cohorts=config.cohorts` with the ids of the world model's inputs.

This module sits in `objectives`: it imports the data schema and the world model's prediction dataclass, nothing
above. Scoring at a rollout step (`StepContext`) and of whole rollouts (`RolloutResult`) lives in
`amrs_hf.simulation.scoring`, which calls `Utility.score`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import yaml

from amrs_hf.data.schema import COHORTS, MODES
from amrs_hf.models.world_model import WorldModelPredictions

DEFAULT_MODE = "default"  # the affect entry for modes without their own, and for the unknown mode (id 0)
ANY = "*"  # a safety rule's wildcard cohort / mode
TERM_NAMES = ("valence", "arousal", "engagement", "like", "diversity", "pessimism")
_TOP_KEYS = ("name", "affect", "engagement", "like", "diversity", "pessimism", "safety")


# ---- the declaration ----
@dataclasses.dataclass(frozen=True)
class AffectObjective:
    """One affect dimension in one mode: linear (`target` None: weight * x) or a target with a tolerance band."""

    weight: float = 0.0  # >= 0
    target: float | None = None  # in [0, 1]; None: the linear reward weight * x
    band: float = 0.0  # >= 0, half-width of the zero-penalty band around `target` (only with a target)

    def to_dict(self) -> dict:
        out = {"weight": self.weight}
        if self.target is not None:
            out.update(target=self.target, band=self.band)
        return out


@dataclasses.dataclass(frozen=True)
class ModeObjective:
    """What a mode asks of the listener's post-listening affect."""

    valence: AffectObjective = AffectObjective()
    arousal: AffectObjective = AffectObjective()

    def to_dict(self) -> dict:
        return {"valence": self.valence.to_dict(), "arousal": self.arousal.to_dict()}


@dataclasses.dataclass(frozen=True)
class DiversityObjective:
    """Per-candidate diversity bonus: capped scaled distance to the nearest recent track, minus a repeat penalty."""

    weight: float = 0.0  # weight of the bonus in the utility
    window: int = 5  # how many of the session's most recent tracks the candidate is compared with (0: all)
    repeat_penalty: float = 0.0  # subtracted from the bonus when the candidate is one of those tracks

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SafetyLimit:
    """A hard limit for listeners of `cohort` in `mode` ("*" = any); every bound given must hold."""

    cohort: str = ANY
    mode: str = ANY
    max_arousal_increase: float | None = None  # predicted arousal - pre-listening arousal <= this
    max_arousal: float | None = None  # predicted arousal <= this
    max_valence_decrease: float | None = None  # pre-listening valence - predicted valence <= this

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass
class UtilityScore:
    """Utility of each (listener, candidate): `total` is what to maximise (-inf where infeasible)."""

    total: torch.Tensor  # (R, N) or (R,): the sum of the terms where feasible, else -inf
    feasible: torch.Tensor  # bool, same shape: no safety limit broken
    terms: dict  # name -> tensor of the same shape: valence, arousal, engagement, like, diversity, pessimism
    unconstrained: torch.Tensor  # the sum of the terms everywhere (finite), for ranking infeasible candidates
    violation: torch.Tensor  # how far over its bound the worst broken limit is (0 where feasible)

    @property
    def num_infeasible(self) -> int:
        return int((~self.feasible).sum())


# ---- the utility ----
@dataclasses.dataclass(frozen=True)
class Utility:
    """A configurable multi-objective utility (formulas in the module docstring). Build it with `from_preset`,
    `from_yaml` or `from_dict`; `to_dict` round-trips."""

    affect: Mapping[str, ModeObjective] = dataclasses.field(default_factory=dict)  # mode or "default" -> objective
    engagement: float = 0.0  # weight of predicted engagement (fraction listened)
    like: float = 0.0  # weight of the predicted like probability
    diversity: DiversityObjective = DiversityObjective()
    pessimism: float = 0.0  # lambda: weight of the ensemble-disagreement penalty
    safety: tuple[SafetyLimit, ...] = ()
    name: str = "custom"

    # -- construction --
    @classmethod
    def from_preset(cls, name: str) -> "Utility":
        from .presets import PRESETS

        if name not in PRESETS:
            raise ValueError(f"unknown utility preset {name!r}; valid presets: {', '.join(PRESETS)}")
        return cls.from_dict(PRESETS[name])

    @classmethod
    def load(cls, spec) -> "Utility":
        """From a preset name, a YAML file path, a mapping, or a `Utility` (returned as is): what a config's
        `utility:` key holds."""
        from .presets import PRESETS

        if isinstance(spec, Utility):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if isinstance(spec, (str, Path)):
            if str(spec) in PRESETS:
                return cls.from_preset(str(spec))
            if Path(spec).is_file():
                return cls.from_yaml(spec)
            raise ValueError(f"utility {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file")
        raise ValueError(f"utility must be a preset name, a YAML path or a mapping, got {type(spec).__name__}")

    @classmethod
    def from_yaml(cls, path) -> "Utility":
        path = Path(path)
        data = yaml.safe_load(path.read_text())
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, data: Mapping) -> "Utility":
        """From a dict such as `to_dict()` writes; missing keys take the zero defaults (no reward, no limits)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a utility config must be a mapping with keys {', '.join(_TOP_KEYS)}; got {data!r}")
        _check_keys(data, _TOP_KEYS, "utility config")
        affect = {}
        affect_data = data.get("affect") or {}
        if not isinstance(affect_data, Mapping):
            raise ValueError("affect must map modes to {valence: ..., arousal: ...}")
        _check_keys(affect_data, (*MODES, DEFAULT_MODE), "affect", what="mode")
        for mode, spec in affect_data.items():
            spec = spec or {}
            _check_keys(spec, ("valence", "arousal"), f"affect.{mode}")
            affect[mode] = ModeObjective(**{dim: _affect(spec.get(dim) or {}, f"affect.{mode}.{dim}")
                                            for dim in ("valence", "arousal")})
        diversity = data.get("diversity") or {}
        if isinstance(diversity, (int, float)) and not isinstance(diversity, bool):
            diversity = {"weight": diversity}
        _check_keys(diversity, ("weight", "window", "repeat_penalty"), "diversity")
        window = diversity.get("window", DiversityObjective.window)
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"diversity.window must be an int >= 0 (0: the whole history), got {window!r}")
        diversity = DiversityObjective(weight=_weight(diversity.get("weight", 0.0), "diversity.weight"),
                                       window=window,
                                       repeat_penalty=_weight(diversity.get("repeat_penalty", 0.0),
                                                              "diversity.repeat_penalty"))
        safety = data.get("safety") or []
        if not isinstance(safety, Sequence) or isinstance(safety, str):
            raise ValueError("safety must be a list of limits like {cohort: clinical, mode: sleep, "
                             "max_arousal_increase: 0.1}")
        name = data.get("name", "custom")
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")
        return cls(affect=affect, engagement=_weight(data.get("engagement", 0.0), "engagement"),
                   like=_weight(data.get("like", 0.0), "like"), diversity=diversity,
                   pessimism=_weight(data.get("pessimism", 0.0), "pessimism"),
                   safety=tuple(_safety(rule, f"safety[{i}]") for i, rule in enumerate(safety)), name=name)

    def to_dict(self) -> dict:
        return {"name": self.name, "affect": {mode: obj.to_dict() for mode, obj in self.affect.items()},
                "engagement": self.engagement, "like": self.like, "diversity": self.diversity.to_dict(),
                "pessimism": self.pessimism, "safety": [rule.to_dict() for rule in self.safety]}

    def to_yaml(self, path=None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def mode_objective(self, mode: str | None) -> ModeObjective:
        """The affect objective of `mode` (its own entry, else `default`, else none)."""
        return self.affect.get(mode) or self.affect.get(DEFAULT_MODE) or ModeObjective()

    # -- scoring --
    def score(self, predictions: WorldModelPredictions, mode_ids, cohort_ids, *, modes, cohorts, pre_arousal=None,
              pre_arousal_mask=None, pre_valence=None, pre_valence_mask=None,
              disagreement: WorldModelPredictions | None = None, diversity=None) -> UtilityScore:
        """Utility of predictions shaped (R, N) (R listeners x N candidates) or (R,).

        `mode_ids`/`cohort_ids` (R,): world-model ids (i >= 1 is `modes[i - 1]`, 0 unknown). `pre_*` (R,) or the
        predictions' shape, NaN or mask False where unknown. `disagreement`: the members' stds (an
        `EnsemblePredictions.std`). `diversity`: per-candidate bonus D, e.g. from `step_diversity`."""
        valence = predictions.valence_mean
        single = valence.dim() == 1
        if single:
            predictions = _unsqueeze(predictions)
            disagreement = None if disagreement is None else _unsqueeze(disagreement)
            diversity = None if diversity is None else torch.as_tensor(diversity)[:, None]
        valence, arousal = predictions.valence_mean, predictions.arousal_mean
        rows, device = valence.shape[0], valence.device
        mode_ids = _ids(mode_ids, len(modes), rows, "mode_ids", "modes", device)[:, None]
        cohort_ids = _ids(cohort_ids, len(cohorts), rows, "cohort_ids", "cohorts", device)[:, None]
        table = self._mode_table(tuple(modes), valence)

        def affect(x, dim):
            w, t, b = (table[f"{dim}_{p}"][mode_ids] for p in ("weight", "target", "band"))
            return torch.where(torch.isnan(t), w * x, -w * ((x - torch.nan_to_num(t)).abs() - b).clamp(min=0))

        terms = {
            "valence": affect(valence, "valence"),
            "arousal": affect(arousal, "arousal"),
            "engagement": self.engagement * predictions.engagement,
            "like": self.like * predictions.like_prob,
            "diversity": (torch.zeros_like(valence) if diversity is None
                          else self.diversity.weight * torch.as_tensor(diversity).to(valence)),
        }
        if disagreement is None or self.pessimism == 0:
            terms["pessimism"] = torch.zeros_like(valence)
        else:
            spread = (table["valence_weight"][mode_ids] * disagreement.valence_mean
                      + table["arousal_weight"][mode_ids] * disagreement.arousal_mean
                      + self.engagement * disagreement.engagement + self.like * disagreement.like_prob)
            terms["pessimism"] = -self.pessimism * spread
        terms = {name: value.expand_as(valence) for name, value in terms.items()}
        unconstrained = sum(terms.values())

        violation = self._violation(predictions, mode_ids, cohort_ids, tuple(modes), tuple(cohorts), pre_arousal,
                                    pre_arousal_mask, pre_valence, pre_valence_mask)
        feasible = violation <= 0
        total = unconstrained.masked_fill(~feasible, -math.inf)
        out = UtilityScore(total=total, feasible=feasible, terms=terms, unconstrained=unconstrained,
                           violation=violation)
        if single:
            out = UtilityScore(total=total[:, 0], feasible=feasible[:, 0], terms={k: v[:, 0] for k, v in terms.items()},
                               unconstrained=unconstrained[:, 0], violation=violation[:, 0])
        return out

    def _mode_table(self, modes: tuple, like: torch.Tensor) -> dict:
        """Per mode id (0 = unknown, i = modes[i - 1]): affect weight, target (NaN = linear) and band."""
        objectives = [self.mode_objective(None)] + [self.mode_objective(m) for m in modes]
        table = {}
        for dim in ("valence", "arousal"):
            specs = [getattr(o, dim) for o in objectives]
            table[f"{dim}_weight"] = like.new_tensor([s.weight for s in specs])
            table[f"{dim}_target"] = like.new_tensor([math.nan if s.target is None else s.target for s in specs])
            table[f"{dim}_band"] = like.new_tensor([s.band for s in specs])
        return table

    def _violation(self, predictions, mode_ids, cohort_ids, modes, cohorts, pre_arousal, pre_arousal_mask,
                   pre_valence, pre_valence_mask) -> torch.Tensor:
        valence, arousal = predictions.valence_mean, predictions.arousal_mean
        violation = torch.zeros_like(arousal)
        if not self.safety:
            return violation
        pre_a, known_a = _pre_state(pre_arousal, pre_arousal_mask, arousal)
        pre_v, known_v = _pre_state(pre_valence, pre_valence_mask, valence)
        mode_names, cohort_names = (None, *modes), (None, *cohorts)
        for rule in self.safety:
            modes_hit = [i for i, m in enumerate(mode_names) if rule.mode == ANY or m == rule.mode]
            cohorts_hit = [i for i, c in enumerate(cohort_names) if rule.cohort == ANY or c == rule.cohort]
            applies = (torch.isin(mode_ids, mode_ids.new_tensor(modes_hit))
                       & torch.isin(cohort_ids, cohort_ids.new_tensor(cohorts_hit)))
            over = []
            if rule.max_arousal_increase is not None:
                over.append(torch.where(known_a, arousal - pre_a - rule.max_arousal_increase, 0.0))
            if rule.max_arousal is not None:
                over.append(arousal - rule.max_arousal)
            if rule.max_valence_decrease is not None:
                over.append(torch.where(known_v, pre_v - valence - rule.max_valence_decrease, 0.0))
            for amount in over:
                violation = torch.maximum(violation, torch.where(applies, amount, 0.0).clamp(min=0))
        return violation

    # -- diversity --
    def step_diversity(self, candidate_ids, candidate_features, recent_ids, recent_features,
                       recent_mask=None) -> torch.Tensor:
        """The per-candidate bonus D (R, N) (before the weight): min(1, distance to the nearest recent track /
        sqrt(2F)) - repeat_penalty * [candidate is a recent track]; 1 where the session has no recent track.

        `candidate_ids` (N,) or (R, N) with standardised features (N, F) or (R, N, F); `recent_ids` (R, L) with
        features (R, L, F) and `recent_mask` (R, L) (True = a real track); only the last `window` real tracks count."""
        recent_mask = (torch.ones_like(recent_ids, dtype=torch.bool) if recent_mask is None
                       else recent_mask.to(torch.bool))
        if self.diversity.window:  # keep the last `window` real tracks of each row
            from_end = recent_mask.flip(1).cumsum(1).flip(1)  # 1 for the latest real track, 2 for the one before ...
            recent_mask = recent_mask & (from_end <= self.diversity.window)
        rows = recent_ids.shape[0]
        candidate_ids = torch.as_tensor(candidate_ids, device=recent_ids.device)
        if candidate_ids.dim() == 1:
            candidate_ids = candidate_ids.expand(rows, -1)
        if candidate_features.dim() == 2:
            candidate_features = candidate_features.expand(rows, -1, -1)
        if recent_ids.shape[1] == 0:  # no history yet: every candidate is new
            return torch.ones(candidate_ids.shape, device=recent_ids.device)
        scale = math.sqrt(2 * candidate_features.shape[-1])
        distance = torch.cdist(candidate_features.float(), recent_features.float()) / scale  # (R, N, L)
        distance = distance.masked_fill(~recent_mask[:, None, :], math.inf)
        novelty = distance.min(dim=2).values.clamp(max=1.0)
        repeated = ((candidate_ids[:, :, None] == recent_ids[:, None, :]) & recent_mask[:, None, :]).any(dim=2)
        return novelty - self.diversity.repeat_penalty * repeated.to(novelty)

    def sequence_diversity(self, track_ids, features, mask=None) -> torch.Tensor:
        """Per-list form (R,): mean over the list's pairs of min(1, distance / sqrt(2F)), minus repeat_penalty x the
        share of the list's tracks that repeat an earlier one. `track_ids` (R, L), `features` (R, L, F) standardised,
        `mask` (R, L) real tracks. A list with fewer than two tracks has diversity 0."""
        mask = torch.ones_like(track_ids, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        scale = math.sqrt(2 * features.shape[-1])
        distance = (torch.cdist(features.float(), features.float()) / scale).clamp(max=1.0)
        length = track_ids.shape[1]
        upper = torch.ones(length, length, dtype=torch.bool, device=track_ids.device).triu(1)
        pairs = upper & mask[:, :, None] & mask[:, None, :]
        ild = (distance * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)
        same = (track_ids[:, :, None] == track_ids[:, None, :]) & pairs  # (earlier i, later j) with the same track
        repeats = same.any(dim=1).sum(1)
        return ild - self.diversity.repeat_penalty * repeats / mask.sum(1).clamp(min=1)


# ---- helpers ----
def _unsqueeze(predictions: WorldModelPredictions) -> WorldModelPredictions:
    return WorldModelPredictions(**{k: (None if v is None else v[:, None]) for k, v in predictions.items()})


def _ids(ids, size: int, rows: int, name: str, names: str, device) -> torch.Tensor:
    ids = torch.as_tensor(ids, device=device).long().reshape(-1)
    if ids.shape[0] != rows:
        raise ValueError(f"{name} must have one id per row ({rows}), got {ids.shape[0]}")
    if ((ids < 0) | (ids > size)).any():
        raise ValueError(f"{name} must be world-model ids in [0, {size}] (i >= 1 is {names}[i - 1], 0 unknown); "
                         f"got {sorted(set(ids.tolist()))}")
    return ids


def _pre_state(value, mask, like: torch.Tensor):
    """(value with 0 where unknown, known) broadcast to `like`'s shape; all unknown when `value` is None."""
    if value is None:
        return torch.zeros_like(like), torch.zeros_like(like, dtype=torch.bool)
    value = torch.as_tensor(value, device=like.device).to(like.dtype)
    known = ~torch.isnan(value)
    if mask is not None:
        known = known & torch.as_tensor(mask, device=like.device).to(torch.bool)
    if value.dim() == 1 and like.dim() == 2:
        value, known = value[:, None], known[:, None]
    return torch.where(known, value, 0.0).expand_as(like), known.expand_as(like)


def _check_keys(data, valid: Sequence[str], where: str, what: str = "key") -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping with keys {', '.join(valid)}; got {data!r}")
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown {what} {key!r}{hint}; valid: {', '.join(valid)}")


def _weight(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


def _unit(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{where} must be a number in [0, 1] (affect lives in [0, 1]), got {value!r}")
    return float(value)


def _affect(spec, where: str) -> AffectObjective:
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = {"weight": spec}  # a bare number: the linear reward
    _check_keys(spec, ("weight", "target", "band"), where)
    target = spec.get("target")
    if target is None and "band" in spec:
        raise ValueError(f"{where}.band needs a target (without one the reward is linear: weight * value)")
    return AffectObjective(weight=_weight(spec.get("weight", 0.0), f"{where}.weight"),
                           target=None if target is None else _unit(target, f"{where}.target"),
                           band=_weight(spec.get("band", 0.0), f"{where}.band"))


def _safety(rule, where: str) -> SafetyLimit:
    fields = [f.name for f in dataclasses.fields(SafetyLimit)]
    _check_keys(rule, fields, where)
    cohort, mode = rule.get("cohort", ANY), rule.get("mode", ANY)
    if cohort != ANY and cohort not in COHORTS:
        raise ValueError(f"{where}.cohort: unknown cohort {cohort!r}; valid: {', '.join((*COHORTS, ANY))}")
    if mode != ANY and mode not in MODES:
        raise ValueError(f"{where}.mode: unknown mode {mode!r}; valid: {', '.join((*MODES, ANY))}")
    bounds = {}
    for name in ("max_arousal_increase", "max_arousal", "max_valence_decrease"):
        value = rule.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
                raise ValueError(f"{where}.{name} must be a number in [-1, 1], got {value!r}")
            bounds[name] = float(value)
    if not bounds:
        raise ValueError(f"{where} sets no bound; give at least one of max_arousal_increase, max_arousal, "
                         "max_valence_decrease")
    return SafetyLimit(cohort=cohort, mode=mode, **bounds)


__all__ = ["AffectObjective", "DiversityObjective", "ModeObjective", "SafetyLimit", "TERM_NAMES", "Utility",
           "UtilityScore"]
