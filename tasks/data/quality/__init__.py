"""Quality filters: Gopher / C4 style heuristics, a word blocklist, and injection-pattern flags.

Every filter has a name (``settings.FILTER_NAMES``, in the order they are checked), an ``enabled`` switch,
its thresholds, and an ``action``:

- ``"drop"`` removes the document (the default for the quality heuristics and the blocklist: text that
  fails them teaches the model little or teaches it the wrong thing);
- ``"flag"`` keeps the document and records the filter's name in its ``quality_flags`` column (the default
  for the prompt-injection and SQL-injection patterns: these also occur in legitimate text, e.g. a security
  tutorial or a write-up of an incident, so a reviewer or a later stage decides, not a regex).

The heuristics and their default thresholds follow Gopher (Rae et al. 2021, "Scaling Language Models",
appendix A) and C4 (Raffel et al. 2020), as reimplemented in datatrove / RedPajama:

- ``word_count``       — 50 ≤ words ≤ 100,000;
- ``mean_word_length`` — 3 ≤ mean characters per word ≤ 10;
- ``repeated_lines``   — duplicate lines ≤ 30 % of the lines and ≤ 20 % of the characters;
- ``top_ngrams``       — the most frequent 2/3/4-gram covers ≤ 20/18/16 % of the word characters;
- ``duplicate_ngrams`` — repeated 5..10-grams cover ≤ 15/14/13/12/11/10 % of the word characters;
- ``symbol_ratio``     — ('#' + '...' + '…') per word ≤ 0.1;
- ``non_alpha_words``  — ≤ 20 % of the words without a single letter (Gopher: 80 % must have one);
- ``blocklist``        — C4's bad-words rule: any hit on the word list drops the document by default.

The modules, each with one job:

- ``measures.py``  — ``TextView``, the lazily computed measures of one text (lower-cased text, words, word
  characters), and the repeated-line and n-gram fractions;
- ``injection.py`` — the prompt-injection and SQL-injection rule tables and their matching;
- ``blocklist.py`` — where the word list is, reading it once per process, and its content hash;
- ``filters.py``   — one class per filter: its settings fields and its check, ``fails(view)``;
- ``settings.py``  — ``QualitySettings`` (one field per filter), ``FILTER_NAMES`` and ``cache_params``;
- ``filtering.py`` — ``check_text`` (the enabled filters in order) and ``filter_documents`` (the actions).

Adding a filter touches one place per kind of thing: its class (settings and ``fails``) in ``filters.py``
and its one field in ``QualitySettings``, whose field order is the check order (``FILTER_NAMES`` is read off
it); ``check_text`` and ``filter_documents`` need no change.

Nothing heavy is imported here: the modules are plain ``re`` and ``pydantic``, so a Dask worker or a test
imports them in milliseconds.
"""
