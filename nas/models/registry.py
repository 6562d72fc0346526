"""Named registries of building blocks, built from plain-data dicts (``{"type": name, **kwargs}``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from nas.errors import SpecError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a type name to a constructor; ``build({"type": name, ...})`` calls it with the rest."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise SpecError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def build(self, config: Mapping[str, Any], **extra: Any) -> T:
        """Build from ``config`` (a dict with ``type``); ``extra`` supplies context such as ``channels``."""
        if not isinstance(config, Mapping) or "type" not in config:
            raise SpecError(f"a {self.kind} must be a mapping with a 'type' key, got {config!r}")
        kwargs = {k: v for k, v in config.items() if k != "type"}
        name = config["type"]
        ctor = self.get(name)
        params = inspect.signature(ctor).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in kwargs if k not in params and not accepts_any]
        if unknown:
            allowed = [p for p in params if p not in extra and p != "self"]
            raise SpecError(
                f"{self.kind} {name!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
        for key, value in extra.items():
            if key in params or accepts_any:
                kwargs.setdefault(key, value)
        try:
            return ctor(**kwargs)
        except TypeError as exc:  # missing required option
            raise SpecError(f"{self.kind} {name!r}: {exc}") from exc


HEADS: Registry = Registry("head")
BLOCKS: Registry = Registry("block")
FUSIONS: Registry = Registry("fusion")
UPSAMPLERS: Registry = Registry("upsampler")
