"""Dedup: exact (sha256 of normalised text), then near (MinHash LSH candidates verified on the bag of words).

How a run goes:

1. **Exact.** Documents whose normalised text (lower case, whitespace collapsed) has the same sha256 form
   one group; its first document in input (snapshot) order represents it. Only representatives go on.
2. **Signatures and sketches**, a batch of documents at a time, all in numpy: the words (``\\w+`` runs of
   the lower-cased text) become 64-bit hashes computed from the code points; each run of ``shingle_size``
   words (or, with ``shingle_unit: char``, characters of the words joined by single spaces) one 64-bit
   shingle hash, and ``num_perm`` hash functions ``h_i(x) = a_i * x + b_i (mod 2**32)`` are applied to every
   shingle of the batch as one matrix operation; the minimum per function and document is the document's
   MinHash signature (``num_perm`` x uint32). The bag-of-words sketch keeps the ``sketch_size`` smallest
   32-bit values of (word, k-th occurrence). Both are pure functions of the text and the settings: no
   Python ``hash()``, no dependence on other documents.
3. **Candidates.** The signature is cut into ``bands`` slices of ``rows`` values (by default the banding that
   makes a pair at shingle Jaccard ``candidate_threshold`` a candidate 99 % of the time); documents whose
   slices agree in some band are candidates. Buckets are found by sorting each band's keys.
4. **Verification.** A candidate pair becomes an edge when its similarity is at least ``threshold``: with
   ``verify: words`` (the default) the Jaccard of the two bags of words from their sketches (exact up to
   ``sketch_size`` words), with ``verify: signature`` the shingle Jaccard the signatures estimate.
5. **Clusters.** Edges join documents with union-find; the first document of each cluster in input order
   survives and every other one is recorded with that survivor's id.

Why candidates and verification measure different things (bench/dedup_study.py): a copy with 10 % of its
words edited keeps about half of its word 3-grams but about 82 % of its bag of words, while a different
document that shares 80 % of its words as long passages keeps about 80 % of either; unrelated documents
share almost no 3-grams (few LSH candidates) but a good part of their bags (common words).

Memory: per exact-group representative one signature (512 bytes at 128 permutations) and one sketch (4
bytes a word, at most ``sketch_size`` words: 2 KiB at 512), the document ids and the exact-key table; text
is held one batch at a time.

Modules: ``settings.py`` (DedupSettings and the derived LSH banding), ``minhash.py`` (words, shingles and
signatures: step 2), ``sketch.py`` (bag-of-words sketches and their Jaccard), ``clusters.py`` (LSH
candidates, verification and union-find: steps 3 to 5) and ``stage.py`` (exact keys, the streaming pass,
the snapshot stage and its Prefect task).
"""
