"""OpenAI CLIP's byte-level BPE tokenizer, without torch.

Behaviour is that of openai/CLIP `clip/simple_tokenizer.py` + `clip.tokenize`:

1. clean: ftfy.fix_text, html.unescape twice, strip, collapse whitespace runs to one space, strip,
   lowercase;
2. split with the `regex` pattern below (special-token strings, the contractions 's 't 're 've 'm
   'll 'd, letter runs, single digits, runs of other non-space characters), case-insensitive;
3. map each piece's UTF-8 bytes to printable characters (`bytes_to_unicode`) and apply byte-pair
   merges in rank order, the last symbol carrying the end-of-word marker `</w>`;
4. `tokenize`: [49406] + ids + [49407], zero-padded to the context length.

The vocabulary (49,408 ids) is the 256 byte characters, the same with `</w>`, the first 48,894
merges of `bpe_simple_vocab_16e6.txt.gz` (OpenAI, MIT licence; shipped as package data), then
`<|startoftext|>` = 49406 and `<|endoftext|>` = 49407. Differences from open_clip's copy: the special
strings are OpenAI's (open_clip uses `<start_of_text>`), and an over-long text raises unless
`truncate=True` (open_clip always truncates).

Speed: the BPE of each distinct word is cached (bounded LRU), the regex is compiled once, and
plain printable ASCII without '&' skips ftfy and html.unescape, which cannot change such text.
"""

from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import ftfy
import numpy as np
import regex

from edge_mm.errors import InputError

DEFAULT_CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
PAD_ID = 0
DEFAULT_BPE_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")

# Merges used: lines 1 .. 48894 of the file (line 0 is a version header).
_NUM_MERGES = 49152 - 256 - 2
_END_OF_WORD = "</w>"
_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_WHITESPACE = regex.compile(r"\s+")


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> Dict[int, str]:
    """Byte value -> one printable character; printable Latin-1 bytes map to themselves.

    The other 68 bytes (controls, space, soft hyphen, ...) map to chr(256), chr(257), ... in byte
    order, so every byte string becomes a string the BPE merges can work on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def basic_clean(text: str) -> str:
    """ftfy + double HTML unescape + strip, as OpenAI does (skipped for text they cannot change)."""
    # Printable ASCII (space to '~') without '&': neither ftfy nor html.unescape can change it
    # (tests/test_clip_tokenizer.py checks this on random strings).
    if text.isascii() and text.isprintable() and "&" not in text:
        return text.strip()
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


class SimpleTokenizer:
    """OpenAI's BPE tokenizer: `encode(text) -> ids`, `decode(ids) -> text`."""

    def __init__(self, bpe_path: Union[str, Path] = DEFAULT_BPE_PATH, cache_size: Optional[int] = 1 << 16) -> None:
        try:
            with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the BPE merges file {bpe_path} ({exc}); reinstall edge-mm") from None
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise InputError(f"{bpe_path} is not CLIP's bpe_simple_vocab_16e6.txt.gz (bad merges); reinstall edge-mm")

        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + _END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder: Dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.decoder: Dict[int, str] = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks: Dict[Tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.vocab_size = len(vocab)
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self.pattern = regex.compile(_SPLIT_PATTERN, regex.IGNORECASE)
        # str.translate table: Latin-1 code point (= byte value) -> BPE symbol.
        self._byte_table = {b: c for b, c in self.byte_encoder.items()}
        self._word_ids = functools.lru_cache(maxsize=cache_size)(self._word_ids_uncached)

    def bpe(self, symbols: str) -> List[str]:
        """Merge a byte-encoded word into vocabulary tokens (the last one ends with `</w>`)."""
        word = list(symbols[:-1]) + [symbols[-1] + _END_OF_WORD]
        ranks = self.bpe_ranks
        while len(word) > 1:
            best_rank, best = None, None
            for pair in zip(word, word[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best = rank, pair
            if best is None:
                break
            first, second = best
            merged: List[str] = []
            i = 0
            # Merge every occurrence, scanning left to right (so "a a a" -> "aa a").
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def _word_ids_uncached(self, piece: str) -> Tuple[int, ...]:
        if piece == SOT_TOKEN or piece == EOT_TOKEN:
            return (self.encoder[piece],)
        symbols = piece.encode("utf-8").decode("latin-1").translate(self._byte_table)
        return tuple(self.encoder[token] for token in self.bpe(symbols))

    def encode(self, text: str) -> List[int]:
        """Text -> BPE ids, without the start and end tokens."""
        text = whitespace_clean(basic_clean(text)).lower()
        ids: List[int] = []
        word_ids = self._word_ids
        for piece in self.pattern.findall(text):
            ids.extend(word_ids(piece))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """BPE ids -> text; `</w>` becomes a space, invalid UTF-8 becomes U+FFFD.

        Special and padding ids are decoded too (id 0 is '!'): strip them first if unwanted.
        """
        try:
            text = "".join(self.decoder[int(i)] for i in ids)
        except KeyError as exc:
            raise InputError(
                f"token id {exc.args[0]} is outside CLIP's vocabulary (0..{self.vocab_size - 1})"
            ) from None
        # Every vocabulary string, special tokens and `</w>` included, is made of byte symbols.
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace(_END_OF_WORD, " ")


_default: Optional[SimpleTokenizer] = None


def default_tokenizer() -> SimpleTokenizer:
    """The shared tokenizer; the merges file is read on first use only."""
    global _default
    if _default is None:
        _default = SimpleTokenizer()
    return _default


def tokenize(
    texts: Union[str, Sequence[str]],
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    truncate: bool = False,
    dtype: type = np.int64,
    tokenizer: Optional[SimpleTokenizer] = None,
) -> np.ndarray:
    """Texts -> (N, context_length) ids: [49406] + BPE ids + [49407], zero-padded.

    Returns int64 by default (open_clip's dtype and torch's index dtype; OpenAI's clip.tokenize
    returns int32 on torch >= 1.8); pass dtype=np.int32 for models exported with int32 ids.
    A text longer than the context raises InputError unless truncate=True, which keeps the
    first context_length ids and makes the last one the end token. `tokenizer` defaults to the
    shared instance (merges file read once).
    """
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise InputError(f"tokenize needs a str or a sequence of str, got {type(texts).__name__}")
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)) or context_length < 2:
        raise InputError(f"context_length must be an int >= 2 (room for start and end tokens), got {context_length!r}")
    if np.dtype(dtype) not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise InputError(f"tokenize dtype must be np.int32 or np.int64, got {np.dtype(dtype)}")
    tokenizer = tokenizer or default_tokenizer()
    result = np.full((len(texts), context_length), PAD_ID, dtype=dtype)
    for row, text in enumerate(texts):
        ids = [SOT_ID] + tokenizer.encode(text) + [EOT_ID]
        if len(ids) > context_length:
            if not truncate:
                raise InputError(
                    f"text {row} has {len(ids)} tokens (with start/end), more than the context length "
                    f"{context_length}; shorten it or pass truncate=True"
                )
            ids = ids[:context_length]
            ids[-1] = EOT_ID
        result[row, : len(ids)] = ids
    return result
