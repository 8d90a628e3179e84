"""Entropy and vocabulary statistics, leaner vs original (the ``entropy`` stage).

Definitions (also in README, "Entropy metrics"):

* **word tokens**: lowercased maximal runs of letters/digits, internal apostrophes kept
  (``don't`` and ``don\u2019t`` are one token, ``'quoted'`` gives ``quoted``); a literal backslash-n is
  read as a newline. Regex: ``[^\\W_]+(?:['\u2019][^\\W_]+)*`` over the lowercased text.
* **BPE tokens**: ids from that side's own 2K byte-level BPE tokenizer (what the models see).
* **n-gram entropy** ``H_n`` (bits per n-gram): Shannon entropy of the empirical distribution of
  n-grams, ``H_n = -sum_g p(g) log2 p(g)``, n-grams counted inside documents (never across a boundary).
* **conditional entropy** ``h_n = H_n - H_{n-1}`` (bits per token; ``h_1 = H_1``): the uncertainty of a
  token given the n-1 before it, as estimated from the same counts.
* **Miller-Madow estimate** ``H_n^MM = H_n + (K_n - 1) / (2 N_n ln 2)`` (keys ``*_H<n>_mm``; ``h_n^MM`` the
  same differences): the plug-in ``H_n`` underestimates the entropy of the source by about
  ``(K - 1) / (2 N ln 2)`` bits, where ``K_n`` is the number of distinct n-grams observed and ``N_n`` the
  number of n-grams counted. The correction matters where ``K_n`` approaches ``N_n`` (3- and 4-grams),
  and it differs between samples of different size; it is a first-order correction and still
  underestimates badly undersampled distributions.
* **vocabulary**: number of distinct word types; **TTR** (type-token ratio): types / tokens;
  **top-k coverage**: share of word tokens that belong to the k most frequent types (k = 2000).
* **mean sentence length**: word tokens per sentence; sentences end at ``.``, ``!``, ``?`` (runs) or at a
  newline; sentences with no word token are not counted.
* **settings**: ``paired`` uses every selected document on both sides (same documents, paired by hash);
  ``equal_budget`` cuts each pair of twin documents to the shorter twin's length (in that token kind), so
  both sides contribute the same documents and exactly the same number of tokens: entropy and vocabulary
  estimates grow with sample size, and leaner text is shorter. Every figure of ``equal_budget`` is
  computed on the cut documents (mean sentence length too: the sentences of a document's first n words,
  the last one possibly cut).
* **pooled**: the genres of ``entropy.pooled_genres`` that have documents on both sides; a genre without
  documents on a side drops out of the pooled figures on both sides, and the report names it.

Modules: ``words`` (word tokens, sentences), ``measure`` (``EntropyConfig``, n-gram counting, the samples
of each setting and scope, ``run``), ``result`` (metrics, tables, plots).
"""
