"""The corpus: pydoc's topics joined in key order, the last 10 % held out, an unknown token."""

import pytest
import torch

from spikeopt.config import ConfigError, LangConfig
from spikeopt.tasks.corpus import UNK, load_corpus, make_corpus, pydoc_topics, split_text


def test_pydoc_topics_split_is_the_last_tenth_and_deterministic():
    from pydoc_data.topics import topics

    text = pydoc_topics()
    assert text == "".join(topics[k] for k in sorted(topics)) and len(text) > 100_000
    a, b = load_corpus(LangConfig()), load_corpus(LangConfig())
    assert len(a.test) == round(len(text) * 0.1) and len(a.train) + len(a.test) == len(text)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test) and a.vocab == b.vocab
    assert a.decode(a.test[:50]) == text[len(a.train) : len(a.train) + 50]


def test_vocabulary_from_the_training_split_plus_unknown():
    corpus = make_corpus("abcabcabca" + "z", 0.1)  # 'z' only in the test split
    assert corpus.vocab == (UNK, "a", "b", "c")
    assert corpus.test.tolist() == [0] and corpus.decode(corpus.test) == "\ufffd"
    assert corpus.encode("cab").tolist() == [3, 1, 2]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_fraction_is_a_clear_error(fraction):
    with pytest.raises(ConfigError, match="lang.test_fraction"):
        split_text("abcdefghij", fraction)


def test_unknown_corpus_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="lang.corpus.*pydoc-topics"):
        load_corpus(LangConfig(corpus="shakespeare"))  # type: ignore[arg-type]
