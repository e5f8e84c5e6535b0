"""Render the prompt templates in prompts/ into chat messages.

Templates are code and data is data: every template is loaded from prompts/ into a sandboxed
Jinja2 environment where an undefined variable raises, and seed or model text is only ever passed
in as a value, so `{{ 7*7 }}` inside a seed reaches the model verbatim.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flows.errors import UserError

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


class PromptError(UserError, ValueError):
    """A template is missing, malformed, or was rendered with missing variables."""


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str  # sha256 of the template bytes, first 12 hex digits
    messages: tuple[dict, ...]


class PromptLibrary:
    """The templates of `directory`; with `fallback`, a template the directory lacks comes from
    there (a prompt set such as prompts/small/ replaces only the templates it has)."""

    def __init__(self, directory: Path | str = PROMPTS_DIR, fallback: Path | str | None = None):
        self.directory = Path(directory)
        self.fallback = Path(fallback) if fallback else None
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        self._templates: dict[str, tuple] = {}

    def _load(self, name: str):
        if name not in self._templates:
            path = self.path(name)
            try:
                source = path.read_bytes()
            except FileNotFoundError:
                raise PromptError(f"{path}: prompt template not found") from None
            try:
                template = self._env.from_string(source.decode("utf-8"))
            except TemplateError as exc:
                raise PromptError(f"{path}: {exc}") from None
            if not {"system", "user"} <= set(template.blocks):
                raise PromptError(f"{path}: needs a 'system' and a 'user' block")
            version = hashlib.sha256(source).hexdigest()[:12]
            self._templates[name] = (template, version)
        return self._templates[name]

    def path(self, name: str) -> Path:
        path = self.directory / f"{name}.j2"
        if self.fallback and not path.exists():
            return self.fallback / f"{name}.j2"
        return path

    def names(self) -> list[str]:
        """Every template this library renders, sorted."""
        folders = [self.directory, *([self.fallback] if self.fallback else [])]
        return sorted({p.stem for folder in folders for p in folder.glob("*.j2")})

    def version(self, name: str) -> str:
        return self._load(name)[1]

    def render(self, name: str, **values) -> Prompt:
        template, version = self._load(name)
        try:
            context = template.new_context(values)
            parts = {
                block: "".join(template.blocks[block](context)).strip()
                for block in ("system", "user")
            }
        except TemplateError as exc:
            raise PromptError(f"{self.path(name)}: {exc}") from None
        messages = (
            {"role": "system", "content": parts["system"]},
            {"role": "user", "content": parts["user"]},
        )
        return Prompt(name=name, version=version, messages=messages)


@lru_cache(maxsize=1)
def default_library() -> PromptLibrary:
    return PromptLibrary()


def library_for(prompts_dir: str | None, prompt_set: str | None) -> PromptLibrary:
    """The templates a run uses: the user's own directory, or a shipped prompt set (prompts/<set>/,
    the rest from prompts/), or the shipped prompts."""
    if prompts_dir:
        return PromptLibrary(prompts_dir)
    if prompt_set:
        folder = PROMPTS_DIR / prompt_set
        if not folder.is_dir():
            known = sorted(p.name for p in PROMPTS_DIR.iterdir() if p.is_dir())
            raise PromptError(f"prompt set {prompt_set!r} not found in {PROMPTS_DIR}; known: {', '.join(known)}")
        return PromptLibrary(folder, fallback=PROMPTS_DIR)
    return default_library()
