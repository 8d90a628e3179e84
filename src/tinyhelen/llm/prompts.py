"""Versioned prompt templates kept as files under ``tinyhelen/prompts/<name>/v<N>.txt``.

File format (plain text)::

    [system]
    ...system message...
    [user]
    ...user message with {{placeholders}}...

``{{include:_rules.txt}}`` pulls in a shared file from the same folder before hashing, so the template hash
covers exactly the text the model sees. ``{{name}}`` placeholders are filled by ``render``; a missing or an
unused variable is an error (no silent prompt drift). A template's identity is ``name@vN:<sha256[:12]>``;
changing a file changes its hash, hence every cache key that used it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
_VAR_RE = re.compile(r"\{\{([a-z_][a-z0-9_]*)\}\}")
_INCLUDE_RE = re.compile(r"\{\{include:([A-Za-z0-9_./-]+)\}\}")
_SECTION_RE = re.compile(r"^\[(system|user)\]\s*$", re.M)

# Delimiters shared by every template and the parsers. Validators reject outputs that still contain them.
BEGIN_TEXT, END_TEXT, END_MARK = "<<<BEGIN TEXT>>>", "<<<END TEXT>>>", "<<<END>>>"
MARKERS = (BEGIN_TEXT, END_TEXT, END_MARK, "<<<BEGIN", "<<<END", "[system]", "[user]")


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    system: str
    user: str
    sha256: str

    @property
    def template_id(self) -> str:
        return f"{self.name}@v{self.version}:{self.sha256[:12]}"

    def variables(self) -> set[str]:
        return set(_VAR_RE.findall(self.system)) | set(_VAR_RE.findall(self.user))

    def render(self, **values: str) -> list[dict[str, str]]:
        """Chat messages with every ``{{var}}`` filled. Values are inserted verbatim (no format spec)."""
        need = self.variables()
        missing, extra = need - set(values), set(values) - need
        if missing or extra:
            raise ValueError(f"template {self.template_id}: missing {sorted(missing)}, unused {sorted(extra)}")

        def fill(s: str) -> str:
            return _VAR_RE.sub(lambda m: str(values[m.group(1)]), s)

        msgs = [{"role": "system", "content": fill(self.system)}] if self.system else []
        return msgs + [{"role": "user", "content": fill(self.user)}]


def _resolve(path: Path, text: str, depth: int = 0) -> str:
    if depth > 4:
        raise ValueError(f"{path}: includes nested too deeply")

    def inc(m: re.Match) -> str:
        p = path.parent / m.group(1)
        if not p.exists():
            raise ValueError(f"{path}: included file {p.name} not found")
        return _resolve(p, p.read_text(encoding="utf-8"), depth + 1).strip("\n")

    return _INCLUDE_RE.sub(inc, text)


def load_template(name: str, version: int | None = None, root: Path | str = PROMPTS_DIR) -> Template:
    """Load ``<root>/<name>/v<version>.txt`` (latest version when ``version`` is None)."""
    folder = Path(root) / name
    if version is None:
        versions = sorted(int(p.stem[1:]) for p in folder.glob("v*.txt") if p.stem[1:].isdigit())
        if not versions:
            raise ValueError(f"no prompt template versions in {folder}")
        version = versions[-1]
    path = folder / f"v{version}.txt"
    if not path.exists():
        raise ValueError(f"prompt template not found: {path}")
    text = _resolve(path, path.read_text(encoding="utf-8"))
    parts = _SECTION_RE.split(text)
    # parts = [preamble, tag1, body1, tag2, body2, ...]
    sections = {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts) - 1, 2)}
    if "user" not in sections:
        raise ValueError(f"{path}: template needs a [user] section")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Template(name, version, sections.get("system", ""), sections["user"], digest)


def strip_end_marker(reply: str) -> str:
    """Strict parser for free-text replies: the reply must end with the END marker line.

    Returns the text before the marker. Raises ValueError (-> re-ask) if the marker is missing."""
    body = reply.rstrip()
    if not body.endswith(END_MARK):
        raise ValueError(f"reply does not end with the end marker {END_MARK}")
    body = body[: -len(END_MARK)].rstrip()
    if body.startswith(BEGIN_TEXT):  # some models echo the input delimiter; accept and strip it
        body = body[len(BEGIN_TEXT):].lstrip("\n")
    if body.endswith(END_TEXT):
        body = body[: -len(END_TEXT)].rstrip()
    if not body.strip():
        raise ValueError("empty reply")
    return body
