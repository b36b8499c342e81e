"""The synthetic listening world: a catalogue, listeners and a logging recommender with a known causal model.

The world is the embedded default data source and the ground truth later stages are checked against. Its causal model
(docs/synthetic_world.md is the full reference, with every equation):

* **Catalogue.** Tracks belong to genres with their own audio-feature means; valence, energy, danceability,
  acousticness, instrumentalness and speechiness are Beta-distributed in [0, 1] (valence rises with energy,
  acousticness falls with it, loudness and tempo follow energy). A hidden quality makes some tracks better for everyone;
  popularity is Zipf-distributed and ranked mostly by quality.
* **Listeners** have a cohort (clinical / consumer), genre affinities, a preferred valence and energy, a baseline mood
  and affective-response parameters: mood persistence, responsiveness to a track's valence and energy, and fatigue
  sensitivity. Clinical listeners have a lower baseline mood (arousal most), respond more strongly in arousal and
  choose calm and sleep sessions more often.
* **A session** has a mode (energize / focus / calm / sleep) with an affective target (valence, arousal) and a mood
  set point (the situational mood of the day, drawn around the listener's baseline) it starts at. Per play: a fatigue
  state grows with replays of the same track and with audio similarity to the recent tracks and decays otherwise; the
  track's noise-free *appeal* is quality + genre affinity - distance to the listener's taste - distance to the mode's
  target - fatigue. Enjoyment (appeal + noise) drives an ordinal 1-5 rating (like = rating >= 4) and whether the track
  is listened to the end (engagement, the fraction listened). Mood carries over: the mood after track t is the mood
  before track t+1. It relaxes toward the session's set point, is pulled a *small* user-specific amount toward the
  track's valence (valence) and energy (arousal), and enjoyment lifts valence by a bounded amount (the path by which
  fatigue also lowers valence). Self-reports observe mood with noise.
* **The logging policy** mixes epsilon-uniform exploration with a softmax over popularity and a noisy estimate of the
  listener's taste in the session's mode; the logged `propensity` is the exact probability of the logged track.

Any policy can act in the world: `start_sessions` makes a vectorised `SessionState`, `step` plays one track per session
and samples outcomes, `expected` gives the noise-free expectations (the true-model ceiling) and `respond` replays a
logged session and answers for candidate tracks. `generate` simulates the logging policy into a `ListeningLog`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy.special import ndtr

from .schema import AUDIO_FEATURES, COHORTS, MODES, ListeningLog, catalogue_to_dataset, plays_to_dataset

SeedLike = Union[None, int, Sequence[int], np.random.Generator]

# Genre: share of the catalogue, then the means of energy, valence, danceability, acousticness, instrumentalness,
# speechiness, tempo (BPM) and the median duration (s).
GENRES = {
    "rock": (0.16, 0.75, 0.50, 0.50, 0.15, 0.08, 0.05, 125.0, 240.0),
    "pop": (0.16, 0.68, 0.60, 0.66, 0.18, 0.02, 0.07, 118.0, 210.0),
    "electronic": (0.12, 0.78, 0.48, 0.68, 0.08, 0.45, 0.06, 126.0, 260.0),
    "hip-hop": (0.10, 0.66, 0.52, 0.75, 0.15, 0.02, 0.25, 100.0, 220.0),
    "indie": (0.10, 0.58, 0.45, 0.52, 0.35, 0.12, 0.05, 120.0, 230.0),
    "metal": (0.06, 0.90, 0.32, 0.40, 0.02, 0.15, 0.08, 135.0, 280.0),
    "jazz": (0.07, 0.42, 0.55, 0.55, 0.60, 0.35, 0.05, 110.0, 300.0),
    "folk": (0.07, 0.38, 0.50, 0.50, 0.70, 0.05, 0.04, 108.0, 220.0),
    "classical": (0.08, 0.18, 0.30, 0.30, 0.90, 0.85, 0.04, 95.0, 360.0),
    "ambient": (0.08, 0.15, 0.25, 0.25, 0.75, 0.85, 0.03, 85.0, 330.0),
}
GENRE_NAMES = tuple(GENRES)

# Independent random streams, so that e.g. changing the number of users leaves the catalogue unchanged.
_CATALOGUE_STREAM, _USER_STREAM, _POLICY_STREAM, _GENERATE_STREAM = range(4)


@dataclasses.dataclass
class SyntheticWorldConfig:
    """Every number of the world. Defaults are calibrated to the SiTunes field study (docs/synthetic_world.md)."""

    # --- catalogue ---
    num_tracks: int = 1000  # tracks in the catalogue
    energy_concentration: float = 8.0  # Beta concentration of energy around its genre mean (higher: tighter genres)
    valence_concentration: float = 3.5  # Beta concentration of valence
    feature_concentration: float = 6.0  # Beta concentration of danceability, acousticness, instrumentalness
    speechiness_concentration: float = 20.0  # Beta concentration of speechiness (mostly low)
    quality_std: float = 0.4  # std of the hidden track quality q (appeal units) everyone shares
    zipf_exponent: float = 1.0  # popularity weight of the track at popularity rank r is r**-zipf_exponent

    # --- listeners ---
    num_users: int = 3000  # listeners in the population
    clinical_share: float = 0.25  # probability a listener is in the clinical cohort
    genre_affinity_std: float = 0.5  # std of a listener's affinity for each genre (appeal units)
    preferred_valence: float = 0.55  # population mean of the valence listeners like in a track
    preferred_energy: float = 0.60  # population mean of the energy listeners like in a track
    taste_concentration: float = 8.0  # Beta concentration of preferred valence / energy around those means
    baseline_valence: float = 0.63  # population mean of a listener's usual mood valence, [0, 1]
    baseline_arousal: float = 0.49  # population mean of a listener's usual arousal
    baseline_std: float = 0.075  # between-listener std of baseline valence and arousal
    persistence: float = 0.50  # mean share of the mood's distance from the session's set point kept across one track
    persistence_concentration: float = 40.0  # Beta concentration of per-listener persistence
    valence_response: float = 0.01  # mean share of the gap to the track's valence that one track closes
    arousal_response: float = 0.11  # mean share of the gap to the track's energy that one track closes (arousal)
    fatigue_sensitivity: float = 1.0  # mean appeal lost per unit of fatigue (per-listener, log-normal spread 0.3)
    clinical_valence_shift: float = -0.06  # clinical listeners' baseline valence offset
    clinical_arousal_shift: float = -0.10  # clinical listeners' baseline arousal offset
    clinical_arousal_gain: float = 1.5  # clinical listeners' arousal responsiveness multiplier

    # --- sessions and modes (tuples follow MODES: energize, focus, calm, sleep) ---
    consumer_mode_probs: tuple = (0.30, 0.30, 0.25, 0.15)  # how consumer listeners choose a session's mode
    clinical_mode_probs: tuple = (0.15, 0.20, 0.35, 0.30)  # clinical listeners choose calm and sleep more often
    mode_valence_targets: tuple = (0.70, 0.55, 0.60, 0.45)  # affective target valence of each mode
    mode_arousal_targets: tuple = (0.85, 0.50, 0.28, 0.12)  # affective target arousal of each mode
    min_session_length: int = 5  # plays in a session, uniform between these bounds
    max_session_length: int = 40
    session_valence_std: float = 0.115  # std of a session's set-point valence around the listener's baseline
    session_arousal_std: float = 0.185  # std of a session's set-point arousal around the listener's baseline
    session_gap_hours: float = 20.0  # mean gap between a listener's sessions (exponential)
    play_pause_s: float = 2.0  # seconds between the end of a play and the start of the next
    start_time: float = 1_704_067_200.0  # Unix time of the earliest possible session (2024-01-01 UTC)
    start_spread_days: float = 30.0  # a listener's first session starts uniformly within this many days

    # --- fatigue ---
    repeat_weight: float = 0.6  # fatigue load of a replay: repeat_weight * log(1 + earlier plays of the track)
    monotony_weight: float = 0.3  # fatigue load of sounding like the recent tracks (similarity in [0, 1])
    monotony_scale: float = 0.5  # similarity = exp(-mean squared standardised audio distance / monotony_scale)
    fatigue_decay: float = 0.7  # share of fatigue carried to the next track
    recent_sound_rate: float = 0.5  # weight of the newest track in the moving average of recent sound

    # --- appeal, rating and engagement ---
    taste_weight: float = 2.0  # appeal lost per squared distance from the preferred valence / energy
    mode_weight: float = 2.0  # appeal lost per squared distance of track energy from the mode's target arousal
    mode_valence_weight: float = 0.5  # relative weight of the valence distance to the mode's target
    enjoyment_noise: float = 0.8  # std of this play's enjoyment around the appeal (shared by rating and mood)
    rating_noise: float = 0.3  # std of the rating report around the enjoyment
    rating_thresholds: tuple = (-2.73, -1.27, -0.20, 1.14)  # ordinal thresholds c_1..c_4 of the 1-5 rating
    engagement_weight: float = 0.15  # weight of enjoyment in listening to the end
    engagement_fatigue_weight: float = 0.3  # extra weight of fatigue against listening to the end
    skip_noise: float = 1.0  # std of the noise in listening to the end
    completion_threshold: float = -0.20  # threshold the completion drive must exceed
    partial_listen_mean: float = 0.67  # mean fraction listened when a track is not listened to the end
    partial_listen_concentration: float = 5.0  # Beta concentration of that fraction

    # --- mood dynamics and reports ---
    enjoyment_lift: float = 0.10  # largest valence lift (or drop) from enjoying (or disliking) a track
    enjoyment_lift_center: float = -0.74  # enjoyment at which the lift is zero (midway between c_2 and c_3)
    enjoyment_lift_scale: float = 1.0  # softness of the lift in enjoyment units
    mood_noise: float = 0.05  # std of the unexplained change of true mood per track
    valence_report_noise: float = 0.08  # std of a self-reported valence around the true mood
    arousal_report_noise: float = 0.12  # std of a self-reported arousal (harder to report: noisier)

    # --- logging policy ---
    logging_policy_name: str = "epsilon_softmax"  # written to the `logging_policy` column
    epsilon: float = 0.2  # share of uniform-random exploration over the catalogue
    policy_popularity_weight: float = 0.5  # softmax weight of log popularity
    policy_taste_weight: float = 1.0  # softmax weight of the policy's estimate of appeal (mode fit included)
    policy_taste_noise: float = 0.5  # std of the policy's error in a listener's appeal for a track

    # --- observation: probability each value is recorded in the log ---
    engagement_rate: float = 1.0  # engagement
    rating_rate: float = 0.7  # rating_score and rating
    pre_report_rate: float = 0.5  # pre_valence and pre_arousal
    post_report_rate: float = 0.5  # valence and arousal

    def __post_init__(self):
        for name in ("consumer_mode_probs", "clinical_mode_probs", "mode_valence_targets", "mode_arousal_targets"):
            value = tuple(getattr(self, name))
            setattr(self, name, value)
            if len(value) != len(MODES):
                raise ValueError(f"{name} needs one value per mode {MODES}, got {value}")
        for name in ("consumer_mode_probs", "clinical_mode_probs"):
            if not np.isclose(sum(getattr(self, name)), 1.0):
                raise ValueError(f"{name} must sum to 1, got {getattr(self, name)}")
        self.rating_thresholds = tuple(self.rating_thresholds)
        if len(self.rating_thresholds) != 4 or np.any(np.diff(self.rating_thresholds) <= 0):
            raise ValueError(f"rating_thresholds needs 4 increasing values, got {self.rating_thresholds}")
        if not 1 <= self.min_session_length <= self.max_session_length:
            raise ValueError("need 1 <= min_session_length <= max_session_length")
        for name in ("clinical_share", "epsilon", "engagement_rate", "rating_rate", "pre_report_rate",
                     "post_report_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass
class SessionState:
    """The true latent state of many sessions that advance in lockstep (one track each per step)."""

    user: np.ndarray  # (S,) user index
    mode: np.ndarray  # (S,) index into MODES
    set_valence: np.ndarray  # (S,) the session's mood set point, [0, 1]
    set_arousal: np.ndarray  # (S,)
    valence: np.ndarray  # (S,) true mood before the next track, [0, 1]
    arousal: np.ndarray  # (S,)
    fatigue: np.ndarray  # (S,) fatigue carried into the next track
    recent: np.ndarray  # (S, D) moving average of the standardised audio of the tracks played
    history: np.ndarray  # (S, t) track indices played so far

    def __len__(self) -> int:
        return len(self.user)

    @property
    def position(self) -> int:
        """Position of the next play in the session (0 before the first)."""
        return self.history.shape[1]

    def select(self, index) -> "SessionState":
        """The state of a subset of sessions (any numpy index: a slice, indices, a mask; indices may repeat)."""
        return SessionState(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


@dataclasses.dataclass
class _Dynamics:
    """The noise-free part of one step: what both `expected` and `step` start from."""

    track: np.ndarray
    appeal: np.ndarray  # A, on the probit scale of enjoyment
    fatigue: np.ndarray  # f, fatigue during this track
    recent: np.ndarray  # the recent sound after this track
    valence_drift: np.ndarray  # next valence before the enjoyment lift and noise
    arousal_drift: np.ndarray  # next arousal before noise


class SyntheticWorld:
    """A simulated population of listeners, a catalogue and a logging policy, with a known causal model.

    `SyntheticWorld(config, seed)` draws the catalogue, the listeners and the logging policy's errors from `seed`.
    Tracks and users are addressed by index in the simulation API and by string id in logs
    (`track_ids` / `track_index`, `user_ids` / `user_index`).
    """

    def __init__(self, config: Optional[SyntheticWorldConfig] = None, seed: int = 0):
        self.config = config or SyntheticWorldConfig()
        self.seed = int(seed)
        self._make_catalogue(np.random.default_rng([self.seed, _CATALOGUE_STREAM]))
        self._make_users(np.random.default_rng([self.seed, _USER_STREAM]))
        policy_rng = np.random.default_rng([self.seed, _POLICY_STREAM])
        self.policy_error = policy_rng.standard_normal((self.num_users, self.num_tracks)).astype(np.float32)

    # ----------------------------------------------------------------------------------------------- construction

    def _make_catalogue(self, rng: np.random.Generator) -> None:
        c = self.config
        n = c.num_tracks
        table = np.array(list(GENRES.values()))
        shares = table[:, 0] / table[:, 0].sum()
        genre = rng.choice(len(GENRES), size=n, p=shares)
        g_energy, g_valence, g_dance, g_acoustic, g_instrumental, g_speech, g_tempo, g_duration = table[genre, 1:].T

        def beta(mean, concentration):
            mean = np.clip(mean, 0.03, 0.97)
            return rng.beta(mean * concentration, (1.0 - mean) * concentration)

        energy = beta(g_energy, c.energy_concentration)
        valence = beta(g_valence + 0.35 * (energy - g_energy), c.valence_concentration)
        danceability = beta(g_dance + 0.3 * (valence - 0.5), c.feature_concentration)
        acousticness = beta(g_acoustic - 0.6 * (energy - g_energy), c.feature_concentration)
        instrumentalness = beta(g_instrumental, c.feature_concentration / 2)
        speechiness = beta(g_speech, c.speechiness_concentration)
        loudness = np.clip(-26.0 + 20.0 * energy + rng.normal(0.0, 2.0, n), -40.0, -1.0)
        tempo = np.clip(g_tempo + 40.0 * (energy - g_energy) + rng.normal(0.0, 18.0, n), 50.0, 210.0)
        duration = np.clip(g_duration * np.exp(rng.normal(0.0, 0.25, n)), 60.0, 900.0)
        self.quality = rng.normal(0.0, c.quality_std, n)
        popularity_rank = np.argsort(np.argsort(-(self.quality + rng.normal(0.0, c.quality_std, n))))
        weights = (popularity_rank + 1.0) ** -c.zipf_exponent
        self.popularity = weights / weights.sum()

        width = max(4, len(str(n - 1)))
        self.track_ids = np.array([f"t{i:0{width}d}" for i in range(n)], dtype=object)
        self.track_index = {track_id: i for i, track_id in enumerate(self.track_ids)}
        self.genre = genre
        features = {
            "valence": valence, "energy": energy, "danceability": danceability, "tempo": tempo,
            "acousticness": acousticness, "instrumentalness": instrumentalness, "speechiness": speechiness,
            "loudness": loudness,
        }
        self.catalogue = pd.DataFrame({
            "track_id": self.track_ids,
            "genre": np.array(GENRE_NAMES, dtype=object)[genre],
            **{name: features[name].astype(np.float32) for name in AUDIO_FEATURES},
            "duration_s": duration.astype(np.float32),
        })
        # The simulation uses the float32 values the log publishes, so that the log is exactly the world's catalogue.
        self.valence = self.catalogue["valence"].to_numpy(np.float64)
        self.energy = self.catalogue["energy"].to_numpy(np.float64)
        self.duration_s = self.catalogue["duration_s"].to_numpy(np.float64)
        audio = self.catalogue[list(AUDIO_FEATURES)].to_numpy(np.float64)
        self.audio_z = (audio - audio.mean(0)) / audio.std(0)

    def _make_users(self, rng: np.random.Generator) -> None:
        c = self.config
        n = c.num_users
        clinical = rng.random(n) < c.clinical_share
        self.cohort = np.where(clinical, COHORTS.index("clinical"), COHORTS.index("consumer"))  # index into COHORTS
        self.genre_affinity = rng.normal(0.0, c.genre_affinity_std, (n, len(GENRES)))
        self.preferred_valence = rng.beta(c.preferred_valence * c.taste_concentration,
                                          (1 - c.preferred_valence) * c.taste_concentration, n)
        self.preferred_energy = rng.beta(c.preferred_energy * c.taste_concentration,
                                         (1 - c.preferred_energy) * c.taste_concentration, n)
        self.baseline_valence = np.clip(
            rng.normal(c.baseline_valence, c.baseline_std, n) + clinical * c.clinical_valence_shift, 0.05, 0.95)
        self.baseline_arousal = np.clip(
            rng.normal(c.baseline_arousal, c.baseline_std, n) + clinical * c.clinical_arousal_shift, 0.05, 0.95)
        self.persistence = rng.beta(c.persistence * c.persistence_concentration,
                                    (1 - c.persistence) * c.persistence_concentration, n)
        self.valence_response = c.valence_response * rng.gamma(4.0, 0.25, n)
        self.arousal_response = (c.arousal_response * rng.gamma(4.0, 0.25, n)
                                 * np.where(clinical, c.clinical_arousal_gain, 1.0))
        self.fatigue_sensitivity = c.fatigue_sensitivity * rng.lognormal(0.0, 0.3, n)
        self.activity = rng.lognormal(0.0, 1.0, n)
        width = max(4, len(str(n - 1)))
        self.user_ids = np.array([f"u{u:0{width}d}" for u in range(n)], dtype=object)
        self.user_index = {user_id: u for u, user_id in enumerate(self.user_ids)}

    @property
    def num_tracks(self) -> int:
        return self.config.num_tracks

    @property
    def num_users(self) -> int:
        return self.config.num_users

    def users_frame(self) -> pd.DataFrame:
        """The listeners' latent parameters, one row per user index."""
        return pd.DataFrame({
            "user_id": self.user_ids,
            "cohort": np.array(COHORTS, dtype=object)[self.cohort],
            "preferred_valence": self.preferred_valence,
            "preferred_energy": self.preferred_energy,
            "baseline_valence": self.baseline_valence,
            "baseline_arousal": self.baseline_arousal,
            "persistence": self.persistence,
            "valence_response": self.valence_response,
            "arousal_response": self.arousal_response,
            "fatigue_sensitivity": self.fatigue_sensitivity,
        })

    # ------------------------------------------------------------------------------------------- the causal model

    def static_appeal(self, user, mode, track) -> np.ndarray:
        """Appeal without fatigue: quality + genre affinity - taste distance - distance to the mode's target.
        Arguments broadcast against each other (e.g. users[:, None] with all tracks[None, :])."""
        c = self.config
        user, mode, track = np.asarray(user), np.asarray(mode), np.asarray(track)
        valence, energy = self.valence[track], self.energy[track]
        taste = (valence - self.preferred_valence[user]) ** 2 + (energy - self.preferred_energy[user]) ** 2
        target_valence = np.asarray(c.mode_valence_targets)[mode]
        target_arousal = np.asarray(c.mode_arousal_targets)[mode]
        mode_fit = (energy - target_arousal) ** 2 + c.mode_valence_weight * (valence - target_valence) ** 2
        return (self.quality[track] + self.genre_affinity[user, self.genre[track]]
                - c.taste_weight * taste - c.mode_weight * mode_fit)

    def _dynamics(self, state: SessionState, track) -> _Dynamics:
        c = self.config
        track = np.asarray(track, dtype=np.int64)
        if track.shape != (len(state),):
            raise ValueError(f"need one track per session: {len(state)} sessions, got shape {track.shape}")
        z = self.audio_z[track]
        if state.position == 0:
            similarity = np.zeros(len(state))
            recent = z
        else:
            similarity = np.exp(-np.mean((z - state.recent) ** 2, axis=1) / c.monotony_scale)
            recent = (1.0 - c.recent_sound_rate) * state.recent + c.recent_sound_rate * z
        repeats = (state.history == track[:, None]).sum(axis=1)
        fatigue = (c.fatigue_decay * state.fatigue + c.repeat_weight * np.log1p(repeats)
                   + c.monotony_weight * similarity)
        user = state.user
        appeal = self.static_appeal(user, state.mode, track) - self.fatigue_sensitivity[user] * fatigue
        relax = 1.0 - self.persistence[user]
        valence_drift = (state.valence + relax * (state.set_valence - state.valence)
                         + self.valence_response[user] * (self.valence[track] - state.valence))
        arousal_drift = (state.arousal + relax * (state.set_arousal - state.arousal)
                         + self.arousal_response[user] * (self.energy[track] - state.arousal))
        return _Dynamics(track, appeal, fatigue, recent, valence_drift, arousal_drift)

    def _lift(self, enjoyment, extra_variance=0.0) -> np.ndarray:
        """Valence lift from enjoyment; with `extra_variance` = enjoyment noise, its expectation given the appeal."""
        c = self.config
        scale = np.sqrt(c.enjoyment_lift_scale ** 2 + extra_variance)
        return c.enjoyment_lift * (2.0 * ndtr((enjoyment - c.enjoyment_lift_center) / scale) - 1.0)

    def _expectations(self, d: _Dynamics) -> dict:
        c = self.config
        appeal = d.appeal
        rating_scale = np.hypot(c.enjoyment_noise, c.rating_noise)
        rating_probs = ndtr((appeal[:, None] - np.asarray(c.rating_thresholds)) / rating_scale)  # P(score > j)
        completion = ndtr((c.engagement_weight * appeal - c.engagement_fatigue_weight * d.fatigue
                           - c.completion_threshold) / np.hypot(c.engagement_weight * c.enjoyment_noise, c.skip_noise))
        lift = self._lift(appeal, c.enjoyment_noise ** 2)
        return {
            "expected_engagement": completion + (1.0 - completion) * c.partial_listen_mean,
            "like_probability": rating_probs[:, 2],
            "expected_rating_score": 1.0 + rating_probs.sum(axis=1),
            "expected_valence": np.clip(d.valence_drift + lift, 0.0, 1.0),
            "expected_arousal": np.clip(d.arousal_drift, 0.0, 1.0),
            "appeal": appeal,
            "fatigue": d.fatigue,
        }

    def _sample(self, state: SessionState, d: _Dynamics, rng: np.random.Generator) -> tuple[dict, SessionState]:
        c = self.config
        n = len(state)
        enjoyment = d.appeal + c.enjoyment_noise * rng.standard_normal(n)
        rated = enjoyment + c.rating_noise * rng.standard_normal(n)
        rating_score = 1 + (rated[:, None] > np.asarray(c.rating_thresholds)).sum(axis=1)
        drive = (c.engagement_weight * enjoyment - c.engagement_fatigue_weight * d.fatigue
                 + c.skip_noise * rng.standard_normal(n))
        partial = rng.beta(c.partial_listen_mean * c.partial_listen_concentration,
                           (1.0 - c.partial_listen_mean) * c.partial_listen_concentration, n)
        engagement = np.where(drive > c.completion_threshold, 1.0, partial)
        valence = np.clip(d.valence_drift + self._lift(enjoyment) + c.mood_noise * rng.standard_normal(n), 0.0, 1.0)
        arousal = np.clip(d.arousal_drift + c.mood_noise * rng.standard_normal(n), 0.0, 1.0)
        report = rng.standard_normal((4, n)) * np.array([[c.valence_report_noise], [c.arousal_report_noise]] * 2)
        outcomes = {
            "engagement": engagement,
            "rating_score": rating_score.astype(np.float64),
            "rating": (rating_score >= 4).astype(np.int8),
            "valence": np.clip(valence + report[0], 0.0, 1.0),
            "arousal": np.clip(arousal + report[1], 0.0, 1.0),
            "pre_valence": np.clip(state.valence + report[2], 0.0, 1.0),
            "pre_arousal": np.clip(state.arousal + report[3], 0.0, 1.0),
        }
        history = np.concatenate([state.history, d.track[:, None].astype(state.history.dtype)], axis=1)
        return outcomes, dataclasses.replace(state, valence=valence, arousal=arousal, fatigue=d.fatigue,
                                             recent=d.recent, history=history)

    # ------------------------------------------------------------------------------------- acting in the world

    def start_sessions(self, user_idx, modes, seed: SeedLike = None) -> SessionState:
        """Open one session per (user, mode); `modes` are names from MODES or indices. Each session's mood set point
        is drawn around the listener's baseline, and the session starts there."""
        c = self.config
        rng = np.random.default_rng(seed)
        user = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        mode = np.asarray(modes).reshape(-1)
        if mode.dtype.kind in "UO":
            mode = np.array([MODES.index(m) for m in mode], dtype=np.int64)
        mode = np.broadcast_to(mode.astype(np.int64), user.shape).copy()
        situation = rng.normal(0.0, 1.0, (2, len(user))) * np.array([[c.session_valence_std], [c.session_arousal_std]])
        set_valence = np.clip(self.baseline_valence[user] + situation[0], 0.0, 1.0)
        set_arousal = np.clip(self.baseline_arousal[user] + situation[1], 0.0, 1.0)
        return SessionState(
            user=user,
            mode=mode,
            set_valence=set_valence,
            set_arousal=set_arousal,
            valence=set_valence,
            arousal=set_arousal,
            fatigue=np.zeros(len(user)),
            recent=np.zeros((len(user), self.audio_z.shape[1])),
            history=np.zeros((len(user), 0), dtype=np.int32),
        )

    def expected(self, state: SessionState, track_idx) -> dict:
        """Noise-free expectations of playing `track_idx` (one per session) in the true state: expected engagement,
        like probability, expected rating score, the next mood before noise (expected valence / arousal), and the
        appeal and fatigue behind them. Arrays of shape (S,)."""
        return self._expectations(self._dynamics(state, track_idx))

    def step(self, state: SessionState, track_idx, rng: SeedLike = None) -> tuple[dict, SessionState]:
        """Play `track_idx` (one per session) and sample the outcomes, all recorded: engagement, rating_score,
        rating, valence, arousal (the post-listening report), pre_valence, pre_arousal. Returns the outcomes and the
        next state (the input state is left unchanged)."""
        return self._sample(state, self._dynamics(state, track_idx), np.random.default_rng(rng))

    def respond(self, history, candidates, seed: SeedLike = 0) -> pd.DataFrame:
        """Replay a session and give the expected outcomes of each candidate as the next track.

        `history` is a mapping with `user_id`, `mode` and `track_id` (the track ids played so far, in order), as in a
        row of `ListeningLog.sessions()`; `candidates` is one track id or a list. The replay draws the mood set point
        and the mood noise from `seed`. Returns one row per candidate, indexed by track id.
        """
        rng = np.random.default_rng(seed)
        state = self.start_sessions([self.user_index[history["user_id"]]], [history["mode"]], rng)
        for track_id in history["track_id"]:
            _, state = self.step(state, [self.track_index[track_id]], rng)
        candidates = [candidates] if isinstance(candidates, str) else list(candidates)
        tracks = np.array([self.track_index[t] for t in candidates], dtype=np.int64)
        answer = self.expected(state.select(np.zeros(len(tracks), dtype=np.int64)), tracks)
        return pd.DataFrame(answer, index=pd.Index(candidates, name="track_id"))

    def logging_probabilities(self, user_idx, mode_idx) -> np.ndarray:
        """The logging policy's distribution over the catalogue for each (user, mode): shape (n, num_tracks), rows
        sum to 1, every entry at least epsilon / num_tracks."""
        c = self.config
        user = np.asarray(user_idx, dtype=np.int64)[:, None]
        mode = np.asarray(mode_idx, dtype=np.int64)[:, None]
        estimate = self.static_appeal(user, mode, np.arange(self.num_tracks)[None, :])
        estimate = estimate + c.policy_taste_noise * self.policy_error[user[:, 0]]
        logits = c.policy_popularity_weight * np.log(self.popularity) + c.policy_taste_weight * estimate
        softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        return c.epsilon / self.num_tracks + (1.0 - c.epsilon) * softmax

    # ------------------------------------------------------------------------------------------ logging a world

    def catalogue_dataset(self):
        return catalogue_to_dataset(self.catalogue)

    def generate(self, num_plays: int, seed: Optional[int] = None, return_truth: bool = False):
        """Simulate the logging policy for `num_plays` plays and return the `ListeningLog`.

        All sessions are simulated in parallel, step by step. `seed` (default: the world's seed) fixes the sessions,
        the logged tracks and every outcome; the same seed gives a bit-identical log. With `return_truth=True`, also
        returns a frame aligned with the plays rows: indices, the true moods, the noise-free expectations of every
        play and the listener's latent parameters.
        """
        c = self.config
        rng = np.random.default_rng([self.seed if seed is None else int(seed), _GENERATE_STREAM])
        lengths = self._session_lengths(int(num_plays), rng)
        num_sessions = len(lengths)
        user = rng.choice(self.num_users, size=num_sessions, p=self.activity / self.activity.sum())
        mode_probs = {"clinical": c.clinical_mode_probs, "consumer": c.consumer_mode_probs}
        mode_cdf = np.cumsum([mode_probs[name] for name in COHORTS], axis=1)[self.cohort[user]]
        mode = np.minimum((rng.random(num_sessions)[:, None] >= mode_cdf).sum(axis=1), len(MODES) - 1)
        # Sessions in log order: by user, then chronologically (a random order of the user's sessions).
        order = np.lexsort((rng.random(num_sessions), user))
        user, mode, lengths = user[order], mode[order], lengths[order]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        session_of_play = np.repeat(np.arange(num_sessions), lengths)
        position = np.arange(num_plays) - starts[session_of_play]
        track, propensity = self._log_tracks(user, mode, session_of_play, rng)

        # Step all sessions together, longest first, so that the sessions still running are always a prefix.
        by_length = np.argsort(-lengths, kind="stable")
        active = (lengths[by_length][None, :] > np.arange(lengths.max())[:, None]).sum(axis=1)
        state = self.start_sessions(user[by_length], mode[by_length], rng)
        record = {name: np.empty(num_plays) for name in ("engagement", "rating_score", "valence", "arousal",
                                                         "pre_valence", "pre_arousal")}
        record["rating"] = np.empty(num_plays, dtype=np.int8)
        truth = {}
        for t, n in enumerate(active):
            state = state.select(slice(0, n))
            rows = starts[by_length[:n]] + t
            dynamics = self._dynamics(state, track[rows])
            if return_truth:
                step_truth = self._expectations(dynamics)
                step_truth["set_valence"], step_truth["set_arousal"] = state.set_valence, state.set_arousal
                step_truth["true_pre_valence"], step_truth["true_pre_arousal"] = state.valence, state.arousal
            outcomes, state = self._sample(state, dynamics, rng)
            for name, values in outcomes.items():
                record[name][rows] = values
            if return_truth:
                step_truth["true_post_valence"], step_truth["true_post_arousal"] = state.valence, state.arousal
                for name, values in step_truth.items():
                    truth.setdefault(name, np.empty(num_plays))[rows] = values

        timestamp = self._timestamps(user, lengths, starts, session_of_play, track, record["engagement"], rng)
        frame = self._plays_frame(user, mode, session_of_play, position, timestamp, track, propensity, record, rng)
        log = ListeningLog(plays=plays_to_dataset(frame), catalogue=self.catalogue_dataset(), source="synthetic")
        if not return_truth:
            return log
        play_user = user[session_of_play]
        latent = self.users_frame().drop(columns=["user_id", "cohort"]).iloc[play_user].reset_index(drop=True)
        truth_frame = pd.DataFrame({"user_index": play_user, "session_index": session_of_play,
                                    "track_index": track, **truth})
        return log, pd.concat([truth_frame, latent], axis=1)

    def _session_lengths(self, num_plays: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform session lengths whose total is exactly num_plays (the last session is cut short if needed)."""
        c = self.config
        if num_plays < 1:
            raise ValueError(f"num_plays must be positive, got {num_plays}")
        mean_length = (c.min_session_length + c.max_session_length) / 2
        draws = rng.integers(c.min_session_length, c.max_session_length + 1,
                             size=int(num_plays / mean_length * 1.2) + 10)
        while draws.sum() < num_plays:
            draws = np.concatenate([draws, rng.integers(c.min_session_length, c.max_session_length + 1, len(draws))])
        ends = np.cumsum(draws)
        count = int(np.searchsorted(ends, num_plays)) + 1
        lengths = draws[:count].copy()
        lengths[-1] -= ends[count - 1] - num_plays
        return lengths

    def _log_tracks(self, user, mode, session_of_play, rng, chunk: int = 256):
        """Draw every play's track from the logging policy (history-free, so all draws can be made up front) and
        its exact propensity. Distributions are computed per (user, mode) pair, `chunk` pairs at a time."""
        pair = user * len(MODES) + mode
        unique_pairs, pair_of_session = np.unique(pair, return_inverse=True)
        play_pair = pair_of_session[session_of_play]
        uniform = rng.random(len(play_pair))
        track = np.empty(len(play_pair), dtype=np.int64)
        propensity = np.empty(len(play_pair))
        by_pair = np.argsort(play_pair, kind="stable")
        bounds = np.searchsorted(play_pair[by_pair], np.arange(0, len(unique_pairs) + chunk, chunk))
        for k, first in enumerate(range(0, len(unique_pairs), chunk)):
            pairs = unique_pairs[first:first + chunk]
            probs = self.logging_probabilities(pairs // len(MODES), pairs % len(MODES))
            cdf = np.cumsum(probs, axis=1)
            cdf[:, -1] = 1.0
            rows = by_pair[bounds[k]:bounds[k + 1]]
            local = play_pair[rows] - first
            offset = np.arange(len(pairs))[:, None]
            picked = np.searchsorted((cdf + offset).ravel(), uniform[rows] + local, side="right") - local * cdf.shape[1]
            track[rows] = picked
            propensity[rows] = probs[local, picked]
        return track, propensity

    def _timestamps(self, user, lengths, starts, session_of_play, track, engagement, rng) -> np.ndarray:
        """Plays last engagement * duration plus a pause; a user's sessions follow each other with exponential gaps."""
        c = self.config
        seconds = engagement * self.duration_s[track] + c.play_pause_s
        elapsed = np.cumsum(seconds) - seconds
        within_session = elapsed - elapsed[starts][session_of_play]
        session_span = np.add.reduceat(seconds, starts) + rng.exponential(c.session_gap_hours * 3600.0, len(lengths))
        before = np.cumsum(session_span) - session_span
        first_of_user = np.concatenate([[True], user[1:] != user[:-1]])
        before -= before[np.maximum.accumulate(np.where(first_of_user, np.arange(len(user)), 0))]
        origin = rng.uniform(0.0, c.start_spread_days * 86400.0, self.num_users)[user]
        return c.start_time + (origin + before)[session_of_play] + within_session

    def _plays_frame(self, user, mode, session_of_play, position, timestamp, track, propensity, record, rng):
        """The plays in schema form, with each outcome recorded at its observation rate (null otherwise)."""
        c = self.config
        n = len(track)
        observed = rng.random((4, n)) < np.array(
            [c.engagement_rate, c.rating_rate, c.pre_report_rate, c.post_report_rate])[:, None]
        width = max(6, len(str(len(user) - 1)))
        session_ids = np.array([f"s{s:0{width}d}" for s in range(len(user))], dtype=object)

        def recorded(values, mask):
            return np.where(mask, values, np.nan).astype(np.float32)

        return pd.DataFrame({
            "user_id": self.user_ids[user][session_of_play],
            "session_id": session_ids[session_of_play],
            "position": position.astype(np.int32),
            "timestamp": timestamp,
            "mode": np.array(MODES, dtype=object)[mode][session_of_play],
            "cohort": np.array(COHORTS, dtype=object)[self.cohort[user]][session_of_play],
            "context": pd.Series(None, index=range(n), dtype=object),
            "track_id": self.track_ids[track],
            "engagement": recorded(record["engagement"], observed[0]),
            "rating": pd.arrays.IntegerArray(record["rating"], ~observed[1]),
            "rating_score": recorded(record["rating_score"], observed[1]),
            "valence": recorded(record["valence"], observed[3]),
            "arousal": recorded(record["arousal"], observed[3]),
            "pre_valence": recorded(record["pre_valence"], observed[2]),
            "pre_arousal": recorded(record["pre_arousal"], observed[2]),
            "logging_policy": c.logging_policy_name,
            "propensity": propensity.astype(np.float32),
        })
