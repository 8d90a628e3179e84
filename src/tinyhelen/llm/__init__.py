"""The LLM layer: one OpenAI-compatible chat client with cache, concurrency, retries and accounting, for
API endpoints (``llm.backend: openai``) and a local llama.cpp server for a GGUF model (``local``).

Stable public API (used by the simplify/Leaner-GLUE/Leaner-Eval stages and by the LLM judge)::

    from tinyhelen.llm import LLMConfig, ChatClient, ChatRequest, ChatResult, LLMFailure
"""
from tinyhelen.llm.client import ChatClient
from tinyhelen.llm.config import LLMConfig
from tinyhelen.llm.core import ChatRequest, ChatResult, LLMFailure
from tinyhelen.llm.prompts import Template, load_template
from tinyhelen.llm.provenance import quarantine_gate, result_status, stage_provenance

__all__ = ["LLMConfig", "ChatClient", "ChatRequest", "ChatResult", "LLMFailure", "Template", "load_template",
           "quarantine_gate", "result_status", "stage_provenance"]
