"""``simplify:`` section of params.yaml."""
from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from tinyhelen.config import Section
from tinyhelen.data import GENRES


class SimplifyConfig(Section):
    """``simplify:`` section of params.yaml."""

    max_docs_per_genre: int | None = Field(20, ge=0, description="live backends: documents per genre sent to the LLM (null: all); the rest are replayed")
    max_doc_tokens: int | None = Field(None, ge=1)       # live backends: longer documents are not sent (replayed)
    chunk_tokens: dict[str, int] = Field(default_factory=lambda: {"default": 700, "code": 1500})
    prompt_version: int | None = None                    # null: latest file in prompts/simplify_<genre>/
    min_length_ratio: float = Field(0.2, gt=0)
    max_length_ratio: float = Field(1.5, gt=0)
    min_words_checked: int = Field(20, ge=0)
    max_oov_share: float = Field(0.25, ge=0, le=1)
    min_function_word_share: float = Field(0.2, ge=0, le=1)
    min_ascii_letter_share: float = Field(0.9, ge=0, le=1)
    wordlist: str | None = None                          # path; null: the shipped resource

    @field_validator("chunk_tokens")
    @classmethod
    def _chunks(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(set(v) - set(GENRES) - {"default"})
        if bad:
            raise ValueError(f"unknown key(s) {bad}; use genre names or 'default'")
        if "default" not in v:
            raise ValueError("needs a 'default' budget")
        if any(n < 50 for n in v.values()):
            raise ValueError("budgets must be >= 50 tokens")
        return v

    @model_validator(mode="after")
    def _ratios(self) -> "SimplifyConfig":
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        return self

    def budget(self, genre: str) -> int:
        return self.chunk_tokens.get(genre, self.chunk_tokens["default"])
