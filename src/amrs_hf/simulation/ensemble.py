"""An ensemble of world models: the same scoring API, plus how much the members disagree (epistemic uncertainty).

Every prediction comes back as the members' mean and their standard deviation (population std, dividing by the
number of members, so one member has disagreement 0), plus the stacked member predictions themselves. Listener states
are stacked on a member axis after the batch axis, (B, M, H), so rollouts repeat and index them like a single model's.

In `simulate`, outcomes are sampled from one member per rollout by default (trajectory sampling: member drawn once, so
a rollout is a consistent world) or from the mixture (a member drawn afresh each step, i.e. a sample of the equal-weight
mixture of the members' predictive distributions); see `simulate(ensemble_sampling=...)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import nn

from amrs_hf.models.world_model import AmrsWorldModel, WorldModelPredictions, WorldModelStates

ENSEMBLE_FILE = "ensemble.json"
# Config fields every member must share: they fix what the inputs mean.
_SHARED_FIELDS = ("vocab_size", "pad_token_id", "unk_token_id", "audio_features", "modes", "cohorts", "context_vocab")


@dataclasses.dataclass
class EnsemblePredictions:
    """`mean` and `std` across members of every prediction, and `members` stacked on a leading axis (M, ...)."""

    mean: WorldModelPredictions
    std: WorldModelPredictions
    members: WorldModelPredictions

    @classmethod
    def from_members(cls, predictions: list[WorldModelPredictions]) -> "EnsemblePredictions":
        names = list(WorldModelPredictions.__dataclass_fields__)
        stacked = {name: torch.stack([p[name] for p in predictions]) for name in names}
        return cls(
            mean=WorldModelPredictions(**{n: v.mean(0) for n, v in stacked.items()}),
            std=WorldModelPredictions(**{n: v.std(0, unbiased=False) for n, v in stacked.items()}),
            members=WorldModelPredictions(**stacked),
        )

    def member(self, index: torch.Tensor) -> WorldModelPredictions:
        """Row b of every prediction taken from member `index[b]` (index: (B,) long)."""
        rows = torch.arange(index.shape[0], device=index.device)
        return WorldModelPredictions(**{n: v[index, rows] for n, v in self.members.items()})

    def mixture_variance(self, name: str) -> torch.Tensor:
        """Variance of the equal-weight mixture for `valence` / `arousal`: mean member variance (aleatoric) plus the
        variance of the member means (epistemic)."""
        means, variances = self.members[f"{name}_mean"], self.members[f"{name}_var"]
        return variances.mean(0) + means.var(0, unbiased=False)


class EnsembleCache:
    """One `WorldModelCache` per member, with the same row operations."""

    def __init__(self, caches):
        self.members = list(caches)

    def get_seq_length(self) -> int:
        return self.members[0].get_seq_length()

    def reserve(self, extra: int) -> "EnsembleCache":
        for cache in self.members:
            cache.reserve(extra)
        return self

    def copy(self) -> "EnsembleCache":
        return EnsembleCache(c.copy() for c in self.members)

    def repeat_interleave(self, repeats: int) -> "EnsembleCache":
        return EnsembleCache(c.repeat_interleave(repeats) for c in self.members)

    def select(self, index: torch.Tensor) -> "EnsembleCache":
        return EnsembleCache(c.select(index) for c in self.members)


class WorldModelEnsemble(nn.Module):
    """M world models trained independently (e.g. different seeds or bootstraps of the log), scored together."""

    def __init__(self, models: list[AmrsWorldModel]):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("an ensemble needs at least one model")
        first = models[0].config
        for i, model in enumerate(models[1:], start=1):
            for name in _SHARED_FIELDS:
                if getattr(model.config, name) != getattr(first, name):
                    raise ValueError(f"member {i} differs from member 0 in {name}: members must share their inputs")
        self.members = nn.ModuleList(models)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def config(self):
        return self.members[0].config

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def track_features(self) -> torch.Tensor:
        return self.members[0].track_features

    @classmethod
    def from_pretrained(cls, paths, **kwargs) -> "WorldModelEnsemble":
        """From a list of model folders, or from one folder written by `save_pretrained` (it lists its members)."""
        if isinstance(paths, (str, os.PathLike)):
            root = Path(paths)
            members = json.loads((root / ENSEMBLE_FILE).read_text())["members"]
            paths = [root / member for member in members]
        return cls([AmrsWorldModel.from_pretrained(path, **kwargs) for path in paths])

    def save_pretrained(self, directory, **kwargs) -> None:
        """The layout of `save_world_model`: member 0 at the root (so `AutoModel.from_pretrained` loads it), the
        others in `member_<i>`, and `ensemble.json` listing all of them."""
        save_world_model(self, directory, **kwargs)

    def forward(self, **inputs) -> EnsemblePredictions:
        """Per-play predictions (B, T) of every member for the same inputs as `AmrsWorldModel.forward`."""
        inputs.pop("use_cache", None)
        inputs.pop("cache", None)
        outputs = [model(**inputs, return_loss=False) for model in self.members]
        return EnsemblePredictions.from_members([out.predictions() for out in outputs])

    def listener_states(self, track_ids, *args, cache: EnsembleCache | None = None, use_cache: bool = False,
                        **kwargs) -> WorldModelStates:
        """Members' states stacked after the batch axis: `states` (B, T, M, H), `next_state` (B, M, H)."""
        caches = cache.members if cache is not None else [None] * len(self)
        outs = [model.listener_states(track_ids, *args, cache=c, use_cache=use_cache, **kwargs)
                for model, c in zip(self.members, caches)]
        use_cache = use_cache or cache is not None
        return WorldModelStates(
            states=torch.stack([o.states for o in outs], dim=2),
            next_state=torch.stack([o.next_state for o in outs], dim=1),
            cache=EnsembleCache(o.cache for o in outs) if use_cache else None,
        )

    def score_candidates(self, states, candidate_ids, candidate_features=None, **step_inputs) -> EnsemblePredictions:
        """`states` (B, M, H); otherwise as `AmrsWorldModel.score_candidates`. Each member scores with its own state."""
        return EnsemblePredictions.from_members([
            model.score_candidates(states[:, i], candidate_ids, candidate_features, **step_inputs)
            for i, model in enumerate(self.members)
        ])


def save_world_model(model, directory, **kwargs) -> None:
    """Save a world model so that `AutoModel.from_pretrained(directory)` loads it (for an ensemble: member 0 at the
    root, the other members in `member_<i>` beside an `ensemble.json` listing all of them, so `load_world_model`
    and `WorldModelEnsemble.from_pretrained` load the whole ensemble)."""
    root = Path(directory)
    if not isinstance(model, WorldModelEnsemble):
        model.save_pretrained(root, **kwargs)
        # a folder that held an ensemble before: its listing would make `load_world_model` load the old ensemble
        (root / ENSEMBLE_FILE).unlink(missing_ok=True)
        return
    root.mkdir(parents=True, exist_ok=True)
    names = ["."] + [f"member_{i}" for i in range(1, len(model))]
    for name, member in zip(names, model.members):
        member.save_pretrained(root / name, **kwargs)
    (root / ENSEMBLE_FILE).write_text(json.dumps({"members": names}, indent=2) + "\n")


def check_model_folder(directory, model_type: str, option: str) -> None:
    """Raise, naming `option` and the folder, when a local `directory` is missing or holds another kind of model
    (e.g. a policy folder given as the world model). A Hub id ("owner/name") that is not a local folder passes."""
    path = Path(directory)
    if not path.is_dir():
        if path.is_absolute() or str(directory).startswith(".") or str(directory).count("/") != 1 or path.exists():
            raise FileNotFoundError(f"{option} {str(directory)!r} is not a folder (give the output folder of the "
                                    f"stage that wrote the {model_type} model)")
        return
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{option} {str(directory)!r} has no config.json: not a saved model folder")
    found = json.loads(config.read_text()).get("model_type")
    if found != model_type:
        raise ValueError(f"{option} {str(directory)!r} holds a {found!r} model, not {model_type!r} (a policy folder "
                         "given as the world model, or the reverse?)")


def load_world_model(directory, **kwargs):
    """An `AmrsWorldModel`, or a `WorldModelEnsemble` where the folder has an `ensemble.json`."""
    check_model_folder(directory, "amrs_world_model", "world model path")
    if (Path(directory) / ENSEMBLE_FILE).exists():
        return WorldModelEnsemble.from_pretrained(directory, **kwargs)
    return AmrsWorldModel.from_pretrained(directory, **kwargs)
