"""``llm:`` section of params.yaml: which endpoint or local model, how hard to push it, what it costs,
and how much quarantine a stage accepts.

API keys are never read from files: ``api_key_env`` names the environment variable that holds the key.
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tinyhelen.config import ParamsError, Section
from tinyhelen.llm.local import LocalConfig


class LLMConfig(Section):
    """Settings of the shared LLM client (every LLM stage reads this section)."""

    # replay: released outputs, no calls; openai: live calls to base_url; local: a llama.cpp server for a GGUF
    backend: Literal["replay", "openai", "local"] = "replay"
    base_url: str | None = None        # any OpenAI-compatible endpoint (OpenAI, Azure, vLLM, llama.cpp, Ollama)
    model: str = "gpt-4o-mini"         # openai: the served model name (local: the GGUF file is the model)
    local: LocalConfig = LocalConfig()
    model_params: int | None = Field(None, ge=0)  # parameter count of `model` where the endpoint does not say
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the env var holding the key (keys never live in files)
    concurrency: int = Field(8, ge=1, le=1024)
    requests_per_second: float = Field(0.0, ge=0)   # client-side rate limit; 0 = unlimited
    max_retries: int = Field(5, ge=0)               # transport retries (429, 5xx, timeouts, malformed bodies)
    unreachable_s: float = Field(10.0, ge=0, description="an endpoint that no connection can be opened to (refused, unknown host, TLS failure) for this long, with no reply in between, is down: every request not yet answered fails at once")
    backoff_base_s: float = Field(1.0, ge=0)        # delay before retry k: base * 2**k * U(0.5, 1.5), capped
    backoff_max_s: float = Field(60.0, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    max_reasks: int = Field(2, ge=0)                # re-asks when a reply fails the strict output parser
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(2048, ge=1)
    seed: int | None = 1234                         # sent to endpoints that support it
    cache_dir: str = "data/llm_cache"               # persistent content-addressed cache (not a DVC output)
    cache_failures: bool = True                     # also cache final format failures (not transport errors)
    batch_api: bool = False                         # use the OpenAI Batch API instead of live calls
    batch_poll_s: float = Field(30.0, gt=0)
    batch_dir: str = "data/llm_batches"             # request/response JSONL files of Batch API jobs
    price_per_1k_input: float = Field(0.00015, ge=0, description="USD per 1K prompt tokens (cost accounting only; gpt-4o-mini)")
    price_per_1k_output: float = Field(0.0006, ge=0, description="USD per 1K completion tokens")
    progress: bool = True                           # tqdm progress bar (requests/s)
    max_quarantine_share: float = Field(0.5, ge=0, le=1)  # a stage fails above this share of quarantined docs
    pipeline_check_below_params: int = Field(1_000_000_000, ge=0)  # smaller models: "pipeline check, not a result"

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not v or not v.replace("_", "").isalnum() or v[0].isdigit():
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        if v.startswith("sk-"):
            raise ValueError("looks like an API key; put the key in an env var and name the variable here")
        return v

    @model_validator(mode="after")
    def _batch_needs_openai(self) -> "LLMConfig":
        if self.batch_api and self.backend != "openai":
            raise ValueError(f"batch_api needs backend openai (got {self.backend})")
        return self

    def api_key(self) -> str:
        """The key from the environment. Local endpoints (loopback) accept any key, so a dummy is used."""
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if self.backend == "local" or (self.base_url and any(h in self.base_url
                                                              for h in ("127.0.0.1", "localhost", "[::1]"))):
            return "sk-local-no-key"
        raise ParamsError(f"llm.api_key_env: environment variable {self.api_key_env} is not set (llm.api_key_env); "
                           "export the API key there or point llm.base_url at a local server")
