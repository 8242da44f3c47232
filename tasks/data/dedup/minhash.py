"""MinHash signatures of texts: words as 64-bit hashes from their code points, word (or character) shingles,
and the minimum of ``num_perm`` hash functions over a document's shingles, all in numpy.

A signature is a pure function of the text and the settings: no Python ``hash()``, no dependence on other
documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tasks.data.dedup.settings import DedupSettings

_WORD = re.compile(r"\w+", re.UNICODE)
_U64 = np.uint64
_CHUNK_SHINGLES = 8192  # shingles per matrix operation: num_perm x this many uint32 (4 MiB at 128 perms)


def words(text: str) -> list[str]:
    """The words shingles are made of: ``\\w+`` runs of the lower-cased text (``word_hashes`` finds the
    same words without making a string of each)."""
    return _WORD.findall(text.lower())


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64: spreads every input bit over the output."""
    x = x ^ (x >> _U64(30))
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def position_weights(size: int) -> np.ndarray:
    """One odd 64-bit weight per position 0..size-1: in a word or a shingle, what makes order count."""
    return mix64(np.arange(1, size + 1, dtype=_U64) * _U64(0x9E3779B97F4A7C15)) | _U64(1)


@lru_cache(maxsize=1)
def _bmp_word_chars() -> np.ndarray:
    """bool per code point below 0x10000: whether the ``\\w`` of ``words`` matches it."""
    return np.array([_WORD.match(chr(c)) is not None for c in range(0x10000)], dtype=bool)


@lru_cache(maxsize=1)
def _bmp_char_values() -> np.ndarray:
    """``_char_values`` of every code point below 0x10000, looked up instead of computed."""
    return mix64(np.arange(0x10000, dtype=_U64) + _U64(0x632BE59BD9B4E019))


def _is_word_char(codes: np.ndarray, bmp: np.ndarray, astral: bool) -> np.ndarray:
    """Whether each code point is a word character, exactly as the regex in ``words`` decides.

    ``bmp`` is ``codes`` capped at 0xFFFF; ``astral`` says whether any code point lies above it.
    """
    is_word = _bmp_word_chars()[bmp]
    if astral:
        for c in np.unique(codes[codes > 0xFFFF]).tolist():
            is_word[codes == c] = _WORD.match(chr(c)) is not None
    return is_word


def _char_values(codes: np.ndarray, bmp: np.ndarray, astral: bool) -> np.ndarray:
    """A random-looking 64-bit value per code point: ``mix64(code point + constant)``."""
    values = _bmp_char_values()[bmp]
    if astral:
        above = codes > 0xFFFF
        values[above] = mix64(codes[above].astype(_U64) + _U64(0x632BE59BD9B4E019))
    return values


@dataclass
class _Scan:
    """Where the words of a batch of lower-cased texts lie in their code points (see ``_scan``)."""

    values: np.ndarray  # uint64 per word character: its random-looking value
    first: np.ndarray  # index into ``values`` of each word's first character
    lengths: np.ndarray  # characters per word
    words_per_text: np.ndarray  # int64 per text


def _scan(texts: list[str], lowered: bool) -> _Scan:
    """The word characters of all ``texts`` (maximal runs of ``\\w`` in the lower-cased text), found on the
    texts' code points as one numpy array instead of one Python string per word."""
    lowered_texts = texts if lowered else [t.lower() for t in texts]
    codes = np.frombuffer("\n".join(lowered_texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    bmp, astral = np.minimum(codes, 0xFFFF), bool(len(codes)) and int(codes.max()) > 0xFFFF
    at = np.flatnonzero(_is_word_char(codes, bmp, astral))  # where the word characters are
    if len(at) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Scan(np.zeros(0, dtype=_U64), empty, empty, np.zeros(len(texts), dtype=np.int64))
    first = np.flatnonzero(np.concatenate(([True], at[1:] != at[:-1] + 1)))  # each word's first char in `at`
    lengths = np.diff(np.append(first, len(at)))
    text_ends = np.cumsum([len(t) + 1 for t in lowered_texts])
    words_before_end = np.searchsorted(at[first], text_ends)
    return _Scan(_char_values(codes[at], bmp[at], astral), first, lengths,
                 np.diff(np.concatenate(([0], words_before_end))))


def word_hashes(texts: list[str], lowered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hashes of the words of all ``texts`` one after another, and each text's word count.

    The words are those of ``words``. A word's hash is ``sum_k char_value(c_k) * position_weight(k)
    (mod 2**64)`` over its characters, mixed and made odd. ``lowered``: the texts are lower-cased already.
    """
    scan = _scan(texts, lowered)
    if len(scan.first) == 0:
        return scan.values, scan.words_per_text
    position = np.arange(len(scan.values)) - np.repeat(scan.first, scan.lengths)
    weighted = scan.values * position_weights(int(scan.lengths.max()))[position]
    return mix64(np.add.reduceat(weighted, scan.first)) | _U64(1), scan.words_per_text


_SPACE = mix64(np.array([0x20], dtype=_U64) + _U64(0x632BE59BD9B4E019))[0]  # the value of the space between words


def char_values(texts: list[str], lowered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per text, its words joined by single spaces as one value per character (what character shingles are
    made of: case, punctuation and spacing do not count), and each text's character count."""
    scan = _scan(texts, lowered)
    if len(scan.first) == 0:
        return scan.values, scan.words_per_text
    text_first_word = np.concatenate(([0], np.cumsum(scan.words_per_text)[:-1]))
    inner = np.ones(len(scan.first), dtype=bool)  # a space goes before every word but a text's first
    inner[text_first_word[scan.words_per_text > 0]] = False
    values = np.insert(scan.values, scan.first[inner], _SPACE)
    owner = np.repeat(np.arange(len(scan.words_per_text)), scan.words_per_text)
    word_chars = np.bincount(owner, weights=scan.lengths, minlength=len(scan.words_per_text)).astype(np.int64)
    counts = np.where(scan.words_per_text > 0, word_chars + scan.words_per_text - 1, 0)
    return values, counts


def shingle_hashes(hashes: np.ndarray, lengths: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of a batch of documents, and how many belong to each document.

    ``hashes`` holds the documents' word hashes one after another; ``lengths`` the word count of
    each. A document of n >= size words has n - size + 1 shingles, a shorter non-empty one a single
    shingle of all its words, an empty one none. Each document is followed by size - 1 zeros so that no
    window reaches into the next document.
    """
    n_docs = len(lengths)
    padded_starts = np.zeros(n_docs, dtype=np.int64)
    if n_docs > 1:
        padded_starts[1:] = np.cumsum(lengths[:-1] + size - 1)
    total = int(lengths.sum()) + n_docs * (size - 1)
    padded = np.zeros(total + size - 1, dtype=_U64)
    word_pos = np.repeat(padded_starts - np.concatenate(([0], np.cumsum(lengths[:-1]))), lengths)
    padded[word_pos + np.arange(len(hashes))] = hashes

    windows = np.zeros(total, dtype=_U64)
    for k, weight in enumerate(position_weights(size)):
        windows += padded[k : k + total] * weight
    counts = np.where(lengths >= size, lengths - size + 1, (lengths > 0).astype(np.int64))
    first = np.concatenate(([0], np.cumsum(counts[:-1])))
    take = np.repeat(padded_starts - first, counts) + np.arange(int(counts.sum()))
    return mix64(windows[take]), counts


@dataclass
class Permutations:
    """The num_perm hash functions h_i(x) = a_i * x + b_i (mod 2**32), a_i odd, drawn from ``seed``.

    They act on the top 32 bits of the shingle hashes: uint32 arithmetic does twice the work per
    instruction of uint64, and min-wise the result is as good (see the estimator check in bench/dedup.py).
    """

    a: np.ndarray  # (num_perm,) uint32, odd
    b: np.ndarray  # (num_perm, 1) uint32

    @classmethod
    def from_settings(cls, num_perm: int, seed: int) -> Permutations:
        rng = np.random.default_rng(seed)
        a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32, endpoint=False) | np.uint32(1)
        b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32, endpoint=False)
        return cls(a=a, b=b[:, None])


def minhash_signatures(shingles: np.ndarray, counts: np.ndarray, perms: Permutations) -> np.ndarray:
    """uint32 signatures, one row per document: min over its shingles x of h_i(x >> 32), per function i.

    Shingles are taken ``_CHUNK_SHINGLES`` at a time (memory stays at num_perm x chunk uint32 however long
    a document is); a document spread over several chunks keeps the minimum of their minima. A document
    without shingles gets all ones and must not be compared.
    """
    mins = np.full((len(perms.a), len(counts)), np.iinfo(np.uint32).max, dtype=np.uint32)
    owner = np.repeat(np.arange(len(counts)), counts)
    values32 = (shingles >> _U64(32)).astype(np.uint32)
    for lo in range(0, len(values32), _CHUNK_SHINGLES):
        hi = min(lo + _CHUNK_SHINGLES, len(values32))
        hashed = np.multiply.outer(perms.a, values32[lo:hi])
        hashed += perms.b
        docs = owner[lo:hi]
        starts = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1])))
        docs = docs[starts]
        mins[:, docs] = np.minimum(mins[:, docs], np.minimum.reduceat(hashed, starts, axis=1))
    return np.ascontiguousarray(mins.T)


def shingles_of(texts: list[str], settings: DedupSettings, lowered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The LSH shingle hashes of ``texts`` (one after another) and how many each text has."""
    units = word_hashes if settings.shingle_unit == "word" else char_values
    return shingle_hashes(*units(texts, lowered), settings.shingle_size)


def sign_texts(texts: list[str], settings: DedupSettings, perms: Permutations | None = None,
               lowered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of ``texts`` (uint32, one row each) and whether each has any shingle."""
    perms = perms or Permutations.from_settings(settings.num_perm, settings.seed)
    shingles, counts = shingles_of(texts, settings, lowered)
    return minhash_signatures(shingles, counts, perms), counts > 0
