"""Keras-style lookup and serialization shared by initializers, regularizers and constraints.

Each family is a dict of Keras class names to classes whose instances have `get_config()`;
identifiers may be a snake_case name ("glorot_uniform"), a class name ("GlorotUniform"), a
Keras config dict, an instance, or a plain callable.
"""
from __future__ import annotations

import re
from typing import Any


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class KerasObject:
    """Base of our initializers, regularizers and constraints: a config and a readable repr."""

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Registry:
    """One family of Keras objects: ``module`` is the Keras module name used in configs."""

    def __init__(self, module: str, kind: str):
        self.module = module
        self.kind = kind
        self.classes: dict[str, type] = {}
        self.aliases: dict[str, Any] = {}

    def register(self, cls: type) -> type:
        self.classes[cls.__name__] = cls
        self.aliases.setdefault(snake_case(cls.__name__), cls)
        return cls

    def alias(self, name: str, factory: Any) -> None:
        self.aliases[name] = factory

    def get(self, identifier: Any, argument: str, allow_none: bool = True) -> Any:
        """Resolve an identifier to an instance (or callable); None stays None."""
        if identifier is None and allow_none:
            return None
        if isinstance(identifier, str):
            factory = self.aliases.get(identifier) or self.classes.get(identifier)
            if factory is None:
                known = sorted(set(self.aliases) | set(self.classes))
                raise ValueError(
                    f"Unknown {self.kind} for argument `{argument}`: {identifier!r}. "
                    f"Known: {', '.join(known)}"
                )
            return factory()
        if isinstance(identifier, dict):
            name = identifier.get("class_name")
            cls = self.classes.get(name) or self.aliases.get(name)
            if cls is None:
                raise ValueError(
                    f"Unknown {self.kind} config for argument `{argument}`: {identifier!r}"
                )
            return cls(**(identifier.get("config") or {}))
        if callable(identifier):
            return identifier
        raise TypeError(
            f"Argument `{argument}` must be a {self.kind} name, config dict, instance or "
            f"callable. Received: {argument}={identifier!r}"
        )

    def serialize(self, obj: Any) -> Any:
        """A Keras-style config dict for our instances; other callables are kept as they are."""
        if obj is None:
            return None
        if type(obj).__name__ in self.classes and hasattr(obj, "get_config"):
            return {
                "module": self.module,
                "class_name": type(obj).__name__,
                "config": obj.get_config(),
                "registered_name": None,
            }
        return obj
