"""The ``simplify`` stage: make the leaner twin of every original document, one genre at a time.

Backends (``llm.backend``):

* ``replay`` (offline default): the leaner twin is the RELEASED one (prepared leaner shard, joined by the
  pairing hash). The validators still run on it and their would-fail counts are reported, but released
  documents are kept (they are the study's data). An original document without a released twin is written to
  the quarantine file with reason ``no_released_twin`` (never dropped silently).
* ``openai`` / ``local`` (live): the first ``simplify.max_docs_per_genre`` documents of the genre (by pairing
  hash, i.e. a fixed pseudo-random sample; null = all) among those of at most ``simplify.max_doc_tokens``
  estimated tokens (null = any length; a CPU pipeline check cannot rewrite 100k-word books) are cut into chunks of whole sentences up to a
  per-genre token budget (fenced code blocks are never split; with a known context size, ``local``, the
  budget shrinks so that prompt + chunk + ``llm.max_tokens`` fit), each chunk is rewritten with the genre's
  versioned prompt template (``tinyhelen/prompts/simplify_<genre>/v<N>.txt``), each document is reassembled
  (chunk separators kept) and validated; content failures go to quarantine with their reasons (a share
  above ``llm.max_quarantine_share`` fails the stage), outages fail the stage (``LLMFailure``). The
  remaining documents are replayed as above. ``math`` is never rewritten (the study left it unchanged);
  ``code`` must keep runnable code.

Quarantine reasons of a live rewrite: the validation rules (``tinyhelen.simplify.validation``: ``empty``,
``length_ratio``, ``oov_share``, ``leftover_marker``, ``language``, ``code_broken``), and ``llm_format`` /
``llm_too_large``: a chunk's reply failed the strict parser after all re-asks, or the endpoint rejected a
chunk as larger than its context.

Modules: ``config`` (``SimplifyConfig``), ``resources`` (the word list, first names), ``chunking`` (chunks and
token budgets), ``validation`` (``Validator``), ``genre`` (``simplify_genre``: one genre's run), ``corpus``
(writing a genre, assembling the leaner corpus); ``python -m tinyhelen.simplify wordlist`` (``__main__``)
rebuilds the word list.
"""
from tinyhelen.simplify.chunking import (REPLY_CAP_RULE, approx_tokens, chunk_text, fitted_budget, prose, reply_budget,
                                         split_units)
from tinyhelen.simplify.config import SimplifyConfig
from tinyhelen.simplify.corpus import assemble_corpus, write_genre
from tinyhelen.simplify.genre import GenreResult, simplify_genre
from tinyhelen.simplify.resources import build_wordlist, first_names, load_wordlist, names_block
from tinyhelen.simplify.validation import Validator

__all__ = ["REPLY_CAP_RULE", "approx_tokens", "chunk_text", "fitted_budget", "prose", "reply_budget", "split_units",
           "SimplifyConfig", "assemble_corpus", "write_genre", "GenreResult", "simplify_genre", "build_wordlist",
           "first_names", "load_wordlist", "names_block", "Validator"]
