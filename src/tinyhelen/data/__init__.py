"""Data acquisition and normalisation (the ``prepare`` stage).

Reads the released TinyHelen data (leaner and original corpora, Leaner-GLUE, Leaner-Eval) from a local
directory with the release's layout (``data.local_dir``; ``make data`` downloads the pinned release there),
normalises every genre's record shape into one document schema, pairs leaner/original twins by the sha256
pairing hash, applies the split map and the data budget, and writes a few large JSONL shards.

Document schema (one JSON object per line in ``data/prepared/corpus/<side>/<split>.jsonl``)::

    doc_id   sha256 of the ORIGINAL document text (the release's pairing hash; same on both sides)
    genre    book | code | conversation | math | textbook | web | wiki
    split    our split name (params: data.splits), e.g. train | validation
    side     leaner | ori
    text     the document text used for training and statistics
    parts    {"prompt": ..., "response": ...} for instruction-shaped genres (code), else null

Modules: ``config`` (``DataConfig``, genres, tiers), ``records`` (one normaliser per record shape, the
pairing hash), ``release`` (release index, local copy, checksums, downloads), ``corpus`` (the stage),
``fetch`` (``make data``: download the pinned release).
"""
from tinyhelen.data.config import (EVAL_BINS, GENRES, GLUE_FIELDS, GLUE_TASKS, NATURAL_GENRES, RELEASED_SPLITS,
                                   RESOURCES, SIDES, TIER_DIRS, DataConfig)
from tinyhelen.data.corpus import (Inventory, PrepareResult, check_data_env, load_corpus, normalise_eval,
                                   normalise_glue, pair_and_split, prepare)
from tinyhelen.data.records import Doc, FileReport, iter_file, normalise, read_docs, sha256_text
from tinyhelen.data.release import (CorpusFile, DownloadError, LocalRelease, ReleaseIndex, corpus_file, download,
                                    parse_manifest, sha256_file)

__all__ = ["EVAL_BINS", "GENRES", "GLUE_FIELDS", "GLUE_TASKS", "NATURAL_GENRES", "RELEASED_SPLITS", "RESOURCES",
           "SIDES", "TIER_DIRS", "DataConfig", "Inventory", "PrepareResult", "check_data_env", "load_corpus",
           "normalise_eval", "normalise_glue", "pair_and_split", "prepare", "Doc", "FileReport", "iter_file",
           "normalise", "read_docs", "sha256_text", "CorpusFile", "DownloadError", "LocalRelease", "ReleaseIndex",
           "corpus_file", "download", "parse_manifest", "sha256_file"]
