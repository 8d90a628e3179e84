"""The LLM layer: one OpenAI-compatible chat client with cache, concurrency, retries and accounting.

Stable public API (used by the simplify/benchmark stages and by the LLM judge)::

    from tinyhelen.llm import LLMConfig, ChatClient, ChatRequest, ChatResult
"""
from tinyhelen.llm.client import ChatClient, ChatRequest, ChatResult
from tinyhelen.llm.config import LLMConfig
from tinyhelen.llm.prompts import Template, load_template

__all__ = ["LLMConfig", "ChatClient", "ChatRequest", "ChatResult", "Template", "load_template"]
