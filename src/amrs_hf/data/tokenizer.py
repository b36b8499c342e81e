"""The track tokenizer: one token per catalogue track, plus mode/cohort and special tokens.

A `PreTrainedTokenizerFast` over a WordLevel vocabulary with a whitespace pre-tokenizer, so text such as
``"<mode:calm> t:874 t:707"`` round-trips exactly through `encode`/`decode`, and TRL's trainers can tokenize prompts
and completions written as whitespace-separated tokens. Track tokens carry a `t:` prefix, so no track id (not even one
named "pad") can collide with a special, mode or cohort token.

Layout of the vocabulary: specials (`<pad>`=0, `<bos>`, `<eos>`, `<unk>`), then mode tokens, cohort tokens, then tracks
in catalogue order. Track ids may not contain whitespace or angle brackets (the catalogue validator refuses
them). It is saved and loaded with `save_pretrained` / `from_pretrained` (plain
`PreTrainedTokenizerFast`, so `AutoTokenizer` loads it without amrs_hf installed).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .schema import COHORTS, MODES

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
TRACK_PREFIX = "t:"


def track_token(track_id: str) -> str:
    return f"{TRACK_PREFIX}{track_id}"


def mode_token(mode: str) -> str:
    return f"<mode:{mode}>"


def cohort_token(cohort: str) -> str:
    return f"<cohort:{cohort}>"


def build_track_tokenizer(
    track_ids: Iterable[str], modes: Sequence[str] = MODES, cohorts: Sequence[str] = COHORTS
) -> PreTrainedTokenizerFast:
    """A tokenizer over `track_ids` (e.g. `log.catalogue["track_id"]`). Track ids, modes and cohorts must be
    non-empty strings without whitespace or '<' '>', each listed once (a repeat would leave a gap in the ids)."""
    track_ids = list(track_ids)
    for what, names in (("track ids", track_ids), ("modes", list(modes)), ("cohorts", list(cohorts))):
        not_text = [name for name in names if not isinstance(name, str)]
        if not_text:
            raise TypeError(f"{what} must be strings (e.g. str(7), not 7); offending: {not_text[:5]}")
        bad = [name for name in names if not name or any(ch.isspace() or ch in "<>" for ch in name)]
        if bad:
            raise ValueError(f"{what} must be non-empty, without whitespace or '<' '>'; offending: {bad[:5]}")
        repeated = sorted({name for name in names if names.count(name) > 1}) if len(set(names)) != len(names) else []
        if repeated:
            raise ValueError(f"{what} must be unique; repeated: {repeated[:5]}")
    tokens = [*SPECIAL_TOKENS, *map(mode_token, modes), *map(cohort_token, cohorts), *map(track_token, track_ids)]
    backend = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(tokens)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[*map(mode_token, modes), *map(cohort_token, cohorts)],
        model_input_names=["input_ids", "attention_mask"],
    )


def track_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of every track token, ascending (what a policy may ever emit)."""
    return sorted(i for tok, i in tokenizer.get_vocab().items() if tok.startswith(TRACK_PREFIX))


def tracks_to_text(track_ids: Iterable[str]) -> str:
    return " ".join(map(track_token, track_ids))


def text_to_tracks(text: str) -> list[str]:
    """Inverse of `tracks_to_text`; non-track tokens (mode, cohort, specials) are skipped."""
    return [tok[len(TRACK_PREFIX):] for tok in text.split() if tok.startswith(TRACK_PREFIX)]
