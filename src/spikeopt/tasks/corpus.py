"""Text corpora for character-level language modelling, and their train/test split.

``pydoc-topics`` is the documentation text every Python install carries
(``pydoc_data.topics.topics``, a dict of topic -> text): its values joined in sorted-key
order, about 465k characters, nothing to download. The last ``test_fraction`` of the
characters is the test split; the vocabulary is the training split's characters (sorted)
plus an unknown token (id 0) for any character the training split never shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from spikeopt.config import ConfigError, LangConfig, check_choices

UNK = "\x00"  # id 0: the unknown token (what a character outside the vocabulary maps to)


def pydoc_topics() -> str:
    """The standard library's pydoc topic texts, joined in sorted-key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


CORPORA: dict[str, Callable[[], str]] = {"pydoc-topics": pydoc_topics}  # lang.corpus


@dataclass(frozen=True)
class Corpus:
    """A corpus as token ids: the training and test splits and the vocabulary they share."""

    train: Tensor  # (N_train,) int64
    test: Tensor  # (N_test,) int64
    vocab: tuple[str, ...]  # vocab[i] is token i's character; vocab[0] is UNK

    def encode(self, text: str) -> Tensor:
        """Characters -> ids (int64); characters outside the vocabulary become UNK (0)."""
        index = {c: i for i, c in enumerate(self.vocab)}
        return torch.tensor([index.get(c, 0) for c in text], dtype=torch.int64)

    def decode(self, ids: Tensor) -> str:
        """Ids -> characters (UNK as U+FFFD, so it shows in samples.txt)."""
        return "".join("\ufffd" if i == 0 else self.vocab[i] for i in ids.tolist())


def split_text(text: str, test_fraction: float) -> tuple[str, str]:
    """(train, test): the last ``test_fraction`` of the characters held out, nothing shuffled."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"lang.test_fraction={test_fraction} must be in (0, 1), e.g. 0.1")
    cut = len(text) - round(len(text) * test_fraction)
    if cut < 2 or cut >= len(text):
        raise ConfigError(
            f"a text of {len(text)} characters cannot be split at "
            f"lang.test_fraction={test_fraction}: a split would be empty"
        )
    return text[:cut], text[cut:]


def make_corpus(text: str, test_fraction: float) -> Corpus:
    """Split ``text`` and encode both splits with the training split's vocabulary."""
    train, test = split_text(text, test_fraction)
    vocab = (UNK, *sorted(set(train) - {UNK}))
    corpus = Corpus(torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64), vocab)
    return Corpus(corpus.encode(train), corpus.encode(test), vocab)


def load_corpus(cfg: LangConfig) -> Corpus:
    """The corpus ``lang.corpus`` names, split by ``lang.test_fraction``."""
    check_choices(cfg)
    return make_corpus(CORPORA[cfg.corpus](), cfg.test_fraction)


__all__ = ["CORPORA", "UNK", "Corpus", "load_corpus", "make_corpus", "pydoc_topics", "split_text"]
