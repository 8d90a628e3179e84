"""The ``data:`` section of params.yaml and the release's vocabulary (genres, sides, splits, tiers, tasks)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tinyhelen.config import Section, check_subset

GENRES = ("book", "code", "conversation", "math", "textbook", "web", "wiki")
NATURAL_GENRES = ("book", "conversation", "textbook", "web", "wiki")  # not code, not math
SIDES = ("leaner", "ori")
RELEASED_SPLITS = ("train", "validation", "test")
# data.tier -> the release's corpus folders it reads. The study's "100M setting" is the union of the
# 10M/ and 100M/ folders (the 100M/ folder alone holds only the documents added on top of 10M/).
TIER_DIRS: dict[str, tuple[str, ...]] = {"10M": ("10M",), "100M": ("10M", "100M")}
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
GLUE_FIELDS = {  # task -> (first text field, second text field or None)
    "cola": ("sentence", None), "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "qnli": ("question", "sentence"),
    "mnli": ("premise", "hypothesis"),
}
EVAL_BINS = ("0-7", "7-8", "8-9", "9-10")
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


class DataConfig(Section):
    """``data:`` section of params.yaml.

    ``local_dir`` is the pipeline's one data source (a DVC dependency of ``prepare``); ``make data``
    downloads the pinned release (``release_url`` at ``release_commit``) there when it does not exist."""

    local_dir: str = "../shared/tinyhelen-data"
    release_url: str = "https://raw.githubusercontent.com/EmpathYang/TinyHelen/{commit}/data/{path}"
    release_commit: str = "1aa4c03"
    tier: Literal["10M", "100M"] = "10M"
    genres: list[str] = Field(default_factory=lambda: list(GENRES))
    # our split -> released splits it is made of. Web train is absent from the release, hence the default
    splits: dict[str, list[str]] = Field(
        default_factory=lambda: {"train": ["train", "validation"], "validation": ["test"]})
    # data budget: max words (whitespace tokens of the ORIGINAL text) per genre and split; null = all
    max_words_per_genre: dict[str, int | None] = Field(
        default_factory=lambda: {"train": None, "validation": None})
    paired_only: bool = True
    on_bad_record: Literal["error", "skip"] = "error"
    verify_checksums: bool = True
    glue_tasks: list[str] = Field(default_factory=lambda: list(GLUE_TASKS))
    download_timeout_s: float = Field(60.0, gt=0)
    download_retries: int = Field(3, ge=0)
    download_backoff_s: float = Field(1.0, ge=0)

    @field_validator("genres")
    @classmethod
    def _genres(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must not be empty")
        return check_subset(v, GENRES, "genre")

    @field_validator("glue_tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        return check_subset(v, GLUE_TASKS, "GLUE task")

    @model_validator(mode="after")
    def _split_map(self) -> "DataConfig":
        if "train" not in self.splits or "validation" not in self.splits:
            raise ValueError("splits must define 'train' and 'validation'")
        seen: dict[str, str] = {}
        for ours, released in self.splits.items():
            if not released:
                raise ValueError(f"splits.{ours} is empty")
            for r in released:
                if r not in RELEASED_SPLITS:
                    raise ValueError(f"splits.{ours}: {r!r} is not a released split {list(RELEASED_SPLITS)}")
                if r in seen:
                    raise ValueError(f"released split {r!r} is used by both splits.{seen[r]} and splits.{ours}")
                seen[r] = ours
        for k, v in self.max_words_per_genre.items():
            if k not in self.splits:
                raise ValueError(f"max_words_per_genre.{k}: no such split in splits {list(self.splits)}")
            if v is not None and v <= 0:
                raise ValueError(f"max_words_per_genre.{k} must be positive or null")
        return self

    @property
    def tier_dirs(self) -> tuple[str, ...]:
        return TIER_DIRS[self.tier]

    @property
    def released_splits(self) -> list[str]:
        """The released splits this config reads, in the order of ``splits``."""
        return [r for rs in self.splits.values() for r in rs]
