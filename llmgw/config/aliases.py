"""Client model names -> model groups (`llmgw.model_aliases`).

Coding agents send provider model names (`claude-sonnet-4-5`, `gpt-5-codex`) and must not
need renaming: an alias maps a name, or an fnmatch pattern of names, to one of our groups.
An exact group name always wins, then the patterns in file order (first match wins).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from fnmatch import fnmatchcase

from llmgw.errors import UnknownModelGroup

AUTO = "auto"  # the agent type's group, as no model at all
_WILDCARDS = frozenset("*?[")


def is_pattern(alias: str) -> bool:
    """Whether an alias key matches many names (has an fnmatch wildcard) or just itself."""
    return not _WILDCARDS.isdisjoint(alias)


def resolve_model(name: str | None, groups: Collection[str],
                  aliases: Mapping[str, str]) -> str | None:
    """The group `name` stands for; None for no name or `auto` (the caller picks by agent type).

    Case-sensitive, like group names. `UnknownModelGroup` when nothing matches: its hint
    lists the groups and says where an alias goes."""
    if name is None or name == "" or (name == AUTO and AUTO not in groups):
        return None
    if name in groups:
        return name
    for pattern, group in aliases.items():
        if fnmatchcase(name, pattern):
            return group
    raise unknown_model(name, groups)


def unknown_model(name: str, groups: Collection[str]) -> UnknownModelGroup:
    """`UnknownModelGroup` for a name that is neither a group nor matched by an alias."""
    error = UnknownModelGroup(name, list(groups))
    error.message = f"Unknown model {name!r}: no model group or llmgw.model_aliases entry matches it."
    error.hint = (f"Known groups: {', '.join(error.known)}. Send one of these (or `auto`), or "
                  f"map the name to a group under llmgw.model_aliases in model_list.yaml, "
                  f"e.g. {_example(name)!r}: {error.known[0] if error.known else 'my-group'}.")
    error.args = (f"{error.message} {error.hint}",)
    return error


def _example(name: str) -> str:
    # `claude-sonnet-4-5` -> `claude-*`: the pattern a user most likely wants.
    head = name.split("-", 1)[0]
    return f"{head}-*" if head and head != name else name


def model_names(groups: Collection[str], aliases: Mapping[str, str], *,
                concrete_only: bool = False) -> list[tuple[str, str | None]]:
    """(name a client may send, the group it resolves to) for a model list: `auto` (None:
    the agent type's group), the groups sorted, then the aliases in file order. With
    `concrete_only`, patterns are left out: a picker would show `claude-*` as a model."""
    names: list[tuple[str, str | None]] = [(AUTO, None)] if AUTO not in groups else []
    names += [(g, g) for g in sorted(groups)]
    names += [(alias, group) for alias, group in aliases.items()
              if not (concrete_only and is_pattern(alias))]
    return names
