"""Dedup: exact (sha256 of normalised text), then near (MinHash LSH over word shingles), in batches.

How a run goes:

1. **Exact.** Documents whose normalised text (lower case, whitespace collapsed) has the same sha256 form
   one group; its first document in input (snapshot) order represents it. Only representatives go on.
2. **Signatures**, a batch of documents at a time, all in numpy: the words (``\\w+`` runs of the
   lower-cased text) become 64-bit hashes computed from the code points, each run of ``shingle_size``
   words one 64-bit shingle hash, and ``num_perm`` hash functions ``h_i(x) = a_i * x + b_i (mod 2**32)``
   are applied to every shingle of the batch as one matrix operation; the minimum per function and
   document is the document's MinHash signature (``num_perm`` x uint32). A signature is a pure function
   of the text and the settings: no Python ``hash()``, no dependence on other documents.
3. **Candidates.** The signature is cut into ``bands`` slices of ``rows`` values; documents whose slices
   agree in some band are candidates. Buckets are found by sorting each band's keys.
4. **Verification.** A candidate pair becomes an edge when its estimated Jaccard similarity (the share of
   equal signature values) is at least ``threshold``.
5. **Clusters.** Edges join documents with union-find; the first document of each cluster in input order
   survives and every other one is recorded with that survivor's id.

Memory: one signature per exact-group representative (512 bytes at 128 permutations), the document ids
and the exact-key table; text is held one batch at a time.

Modules: ``settings.py`` (DedupSettings and the derived LSH banding), ``minhash.py`` (words, shingles and
signatures: step 2), ``clusters.py`` (LSH candidates, verification and union-find: steps 3 to 5) and
``stage.py`` (exact keys, the streaming pass, the snapshot stage and its Prefect task).
"""
