"""edge_mm.clip.tokenizer against open_clip's copy of OpenAI's SimpleTokenizer (the oracle)."""

import random
from pathlib import Path

import numpy as np
import pytest

from edge_mm.clip import tokenizer as tk
from edge_mm.errors import InputError

ROOT = Path(__file__).resolve().parents[1]

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "Dog",
    "CAT",
    "jumping",
    "over",
    "MiXeD",
    "Case",
    "naïve",
    "café",
    "façade",
    "Øresund",
    "straße",
    "İstanbul",
    "ǅemal",
    "résumé",
    "e\u0301",
    "Ελληνικά",
    "Привет",
    "مرحبا",
    "नमस्ते",
    "ภาษาไทย",
    "猫",
    "東京タワー",
    "中文字符",
    "한국어",
    "ﾃｽﾄ",
    "ＦＵＬＬ",
    "😀",
    "👍🏽",
    "🇺🇸",
    "👨‍👩‍👧",
    "❤️",
    "&amp;",
    "&#39;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&amp;amp;",
    "&nbsp;",
    "&#x27;",
    "&copy;",
    "AT&T",
    "&unknown;",
    "2024",
    "3.14",
    "1,000,000",
    "007",
    "½",
    "²",
    "٣",
    "Ⅻ",
    "!",
    "?!",
    "...",
    "--",
    "(",
    ")",
    "#hashtag",
    "@user",
    "$5",
    "%",
    "™",
    "—",
    "“quoted”",
    "‘single’",
    "it's",
    "don't",
    "they're",
    "we've",
    "I'm",
    "you'll",
    "he'd",
    "IT'S",
    "DON'T",
    "'s",
    "'t",
    "'re",
    "cafÃ©",
    "â€œmojibakeâ€\x9d",
    "<b>bold</b>",
    "</w>",
    "<|",
    "|>",
    "<|endof",
    "http://example.com/a?b=c",
    "snake_case",
    "x86_64",
    "a\u200bb",
    "ﬁ",
    "Å",
    "ß",
    "antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaa",
    "zzzz",
]
SEPARATORS = [" ", " ", " ", "", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x1c", "\x0b", " \f "]
RANDOM_BLOCKS = [
    (0x20, 0x7F),
    (0xA0, 0x250),
    (0x370, 0x400),
    (0x400, 0x500),
    (0x600, 0x700),
    (0x900, 0x980),
    (0xE00, 0xE80),
    (0x3040, 0x3100),
    (0x4E00, 0x4F00),
    (0xAC00, 0xAD00),
    (0x1F300, 0x1F650),
    (0x2000, 0x2070),
    (0x2190, 0x2300),
    (0x0, 0x20),
    (0xFF00, 0xFFF0),
]


def varied_strings(count: int, seed: int = 0):
    """`count` deterministic strings mixing words, entities, numbers, emoji and random code points."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        kind = i % 4
        if kind in (0, 1):
            parts = [rnd.choice(WORDS) for _ in range(rnd.randint(0, 14))]
            text = "".join(p + rnd.choice(SEPARATORS) for p in parts)
        elif kind == 2:
            lo, hi = rnd.choice(RANDOM_BLOCKS)
            text = "".join(chr(rnd.randrange(lo, hi)) for _ in range(rnd.randint(0, 30)))
        else:
            parts = [
                rnd.choice(WORDS).upper() if rnd.random() < 0.3 else rnd.choice(WORDS) for _ in range(rnd.randint(1, 8))
            ]
            parts.insert(rnd.randint(0, len(parts)), "".join(chr(rnd.randrange(0x20, 0x3000)) for _ in range(5)))
            text = " ".join(parts)
        out.append(text)
    return out


FIXED = [
    "",
    " ",
    "\t\n  \r\n",
    "a",
    "A",
    "a diagram",
    "Hello World!",
    "2024",
    "it's   a    test",
    "&amp;lt;b&amp;gt;",
    "&#39;quoted&#39;",
    "x" * 500,
    " ".join(["word"] * 200),
    "😀" * 40,
    "猫" * 100,
    "a" + "\u0301" * 30,
]


@pytest.fixture(scope="module")
def oracle():
    open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
    return open_clip_tokenizer


def test_known_ids():
    # Golden ids computed with OpenAI's tokenizer (research/clip.md, section 1.6).
    cases = {
        "a diagram": [49406, 320, 22697, 49407],
        "a photo of a cat.": [49406, 320, 1125, 539, 320, 2368, 269, 49407],
        "Hello World!": [49406, 3306, 1002, 256, 49407],
        "2024": [49406, 273, 271, 273, 275, 49407],
    }
    ids = tk.tokenize(list(cases))
    assert ids.shape == (4, 77) and ids.dtype == np.int64
    for row, expected in zip(ids, cases.values()):
        assert row[: len(expected)].tolist() == expected
        assert not row[len(expected) :].any()


def test_vocabulary_layout():
    tok = tk.default_tokenizer()
    assert tok.vocab_size == tk.VOCAB_SIZE == 49408
    assert tok.encoder["!"] == 0 and tok.encoder["!</w>"] == 256
    assert tok.sot_id == tk.SOT_ID == 49406 and tok.eot_id == tk.EOT_ID == 49407
    assert len(set(tk.bytes_to_unicode().values())) == 256


def test_encode_matches_open_clip_on_varied_strings(oracle):
    reference = oracle.SimpleTokenizer()
    texts = varied_strings(2400) + FIXED
    ours = tk.SimpleTokenizer()
    mismatches = [t for t in texts if ours.encode(t) != reference.encode(t)]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, first: {mismatches[0]!r}"
    # The strings really are varied: many distinct pieces, non-ASCII, long ones.
    assert sum(not t.isascii() for t in texts) > 1000
    assert max(len(ours.encode(t)) for t in texts) > 200


def test_tokenize_matches_open_clip_with_truncation(oracle):
    texts = varied_strings(600, seed=1) + FIXED
    expected = oracle.tokenize(texts).numpy()
    ours = tk.tokenize(texts, truncate=True)
    assert ours.dtype == np.int64 and ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)
    # Some rows were actually cut and end with the end token.
    cut = ours[:, -1] == tk.EOT_ID
    assert cut.sum() >= 3


def test_context_length_and_dtype():
    ids = tk.tokenize(["a dog", "a cat"], context_length=8, dtype=np.int32)
    assert ids.shape == (2, 8) and ids.dtype == np.int32
    assert ids[0].tolist() == [49406, 320, 1929, 49407, 0, 0, 0, 0]
    assert tk.tokenize([]).shape == (0, 77)


def test_decode_matches_open_clip(oracle):
    reference = oracle.SimpleTokenizer()
    ours = tk.default_tokenizer()
    for text in varied_strings(300, seed=2):
        ids = ours.encode(text)
        assert ours.decode(ids) == reference.decode(ids)
    assert ours.decode([49406, 320, 1929, 49407]) == "<|startoftext|>a dog <|endoftext|>"


def test_openai_special_strings():
    # OpenAI's split pattern matches its own special strings, so they map to their ids.
    ids = tk.tokenize("<|startoftext|>hi<|endoftext|>")[0]
    assert ids[:5].tolist() == [49406, 49406, 1883, 49407, 49407]


def test_ascii_fast_path_equals_full_cleaning():
    import html

    import ftfy

    rnd = random.Random(3)
    chars = [chr(c) for c in range(0x20, 0x7F)]
    for _ in range(3000):
        text = "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 60)))
        assert tk.basic_clean(text) == html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def test_overflow_raises_with_index_and_count():
    texts = ["short", "word " * 100]
    with pytest.raises(InputError, match=r"text 1 has 102 tokens .*truncate=True"):
        tk.tokenize(texts)
    ids = tk.tokenize(texts, truncate=True)
    assert ids[1, -1] == tk.EOT_ID and ids[1, 0] == tk.SOT_ID and (ids[1] != 0).all()
    # Exactly 77 with start/end fits without truncation.
    assert tk.tokenize("word " * 75)[0, -1] == tk.EOT_ID


@pytest.mark.parametrize("bad", [None, 3, [b"bytes"], ["ok", 5]])
def test_bad_input_types(bad):
    with pytest.raises(InputError):
        tk.tokenize(bad)


def test_bad_context_length():
    with pytest.raises(InputError, match="context_length"):
        tk.tokenize("a", context_length=1)


def test_bad_vocab_file(tmp_path):
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(InputError, match="BPE merges file"):
        tk.SimpleTokenizer(path)
