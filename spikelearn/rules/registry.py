"""The rule registry: ``RULES`` maps a rule's name to its class (configuration files and tests iterate over it).

A rule module registers its class with :func:`register`; this module imports no rule, so a rule that needs the
registry (``Flossed``, which builds its base rule by name) imports it without a cycle. Importing
:mod:`spikelearn.rules` registers every built-in rule.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

__all__ = ["RULES", "register", "make_rule"]

RULES: dict[str, type] = {}

_T = TypeVar("_T", bound=type)


def register(name: str) -> Callable[[_T], _T]:
    """Class decorator: register a rule class under ``name`` (a name taken by another class is an error)."""

    def deco(cls: _T) -> _T:
        if name in RULES and RULES[name] is not cls:
            raise ValueError(f"rule name {name!r} is already registered for {RULES[name].__name__}")
        RULES[name] = cls
        return cls

    return deco


def make_rule(name: str, **options: Any) -> Any:
    """Instantiate a registered rule by name; an unknown name lists the registered ones."""
    try:
        cls = RULES[name]
    except KeyError:
        raise ValueError(f"unknown learning rule {name!r}; registered rules: {sorted(RULES)}") from None
    return cls(**options)
