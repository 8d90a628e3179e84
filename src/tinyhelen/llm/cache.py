"""Content-addressed on-disk cache of LLM replies.

Key = sha256 of the canonical JSON of (model, template id + hash, rendered messages, decoding params).
Entry = ``<cache_dir>/<key[:2]>/<key>.json`` holding the request (for audits: what was asked) and the
final reply text, usage and status. Writes are atomic, so concurrent stages sharing one cache directory
never see half-written entries. The cache is deliberately NOT a DVC output: it persists across
experiments and branches and makes reruns free.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from tinyhelen.io import write_json

log = logging.getLogger(__name__)


def cache_key(model: str, template_id: str, messages: list[dict[str, str]], decoding: dict[str, Any]) -> str:
    blob = json.dumps({"model": model, "template": template_id, "messages": messages, "decoding": decoding},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    """Maps cache keys to stored replies. ``root=None`` disables caching."""

    def __init__(self, root: Path | str | None):
        self.root = Path(root) if root else None

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:  # a damaged entry is a miss, never a crash
            log.warning("ignoring unreadable cache entry %s (%s)", p, exc)
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        if self.root is None:
            return
        write_json(self.path(key), entry, indent=1)
