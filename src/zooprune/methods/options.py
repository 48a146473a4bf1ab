"""Typed method options: each method declares a frozen dataclass of its settings at registration.

``MethodOptions.parse(method, {"num_directions": 16, ...})`` builds the dataclass from keyword
options (CLI flags, ``zooprune.load(**options)``, lmms-eval ``--model_args``) and rejects, with an
error naming the option and the method:

- unknown keys (``num_direction=16``: "did you mean 'num_directions'?");
- values of the wrong type (strings from a command line are converted when they parse);
- options that the chosen configuration would ignore (e.g. ``num_directions`` with zoo's
  closed-form estimator): each options class says which in :meth:`MethodOptions.ignored`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

O = TypeVar("O", bound="MethodOptions")  # noqa: E741

#: FastV / DART: prune after the second decoder layer.
DEFAULT_LAYER = 2


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Options of a method that has none (the base of every method's options dataclass)."""

    def ignored(self, given: frozenset[str]) -> dict[str, str]:
        """Options among ``given`` that this configuration ignores, each with the reason (override)."""
        return {}

    @classmethod
    def parse(cls: type[O], method: str, values: Mapping[str, Any] | None = None) -> O:
        """Build the options of ``method`` from keyword values, with clear errors (see module doc)."""
        return cls().updated(method, values)

    def updated(self: O, method: str, values: Mapping[str, Any] | None = None) -> O:
        """A copy with ``values`` changed, checked like :meth:`parse`. An option counts as given when
        it is in ``values`` or differs from its default (so a later change cannot strand it)."""
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(self)}
        for key in values:
            if key not in fields:
                known = ", ".join(fields) or "none"
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown option {key!r} for method {method!r} (its options: {known}).{hint}")
        hints = typing.get_type_hints(type(self))
        typed = {key: _coerce(value, hints[key], key, method) for key, value in values.items()}
        try:
            options = dataclasses.replace(self, **typed)
        except ValueError as err:
            raise ValueError(f"method {method!r}: {err}") from None
        defaults = type(self)()
        given = set(values) | {n for n in fields if getattr(options, n) != getattr(defaults, n)}
        ignored = options.ignored(frozenset(given))
        if ignored:
            key, reason = next(iter(ignored.items()))
            raise ValueError(f"option {key!r} of method {method!r} is ignored: {reason}")
        return options

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{name: value}`` of every option."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class InLLMStages(MethodOptions):
    """The base of every in-LLM method's options: where it prunes and how many tokens each stage keeps.

    An in-LLM method prunes in S >= 1 stages at decoder layers ``K_1 < ... < K_S``
    (:meth:`stage_layers`): layers ``[K_s, K_{s+1})`` see only the visual tokens stage s kept, chosen
    from those stage s-1 kept with the state of layer ``K_s - 1`` (``adapters/in_llm.py``). The
    method is called once per stage and image (``PruneContext.llm_stage``); the last stage keeps the
    requested k, earlier ones :meth:`stage_keep`.

    Attributes:
        llm_fields: optional in-LLM context fields the method reads besides the ones always filled
            (``llm_attention``, ``llm_hidden``, ``llm_keys``, ``llm_query_*``): any of
            ``llm_next_attention``, ``llm_text_attention``, ``llm_residual``, ``llm_image_embeds``,
            ``instruction`` (see ``PruneContext``). The plan computes only these.
    """

    llm_fields: typing.ClassVar[frozenset[str]] = frozenset()

    def stage_layers(self, num_layers: int) -> tuple[int, ...]:
        """``(K_1, ..., K_S)`` for a language model of ``num_layers`` decoder layers (ascending)."""
        raise NotImplementedError

    def stage_keep(self, n: int, k: int, stage: int, num_stages: int) -> int:
        """Visual tokens (of the image's ``n``) left after ``stage`` (0-based) when ``k`` remain after
        the last stage; non-increasing in ``stage``, ``k`` at ``num_stages - 1``. Default: k at every stage."""
        return k


@dataclasses.dataclass(frozen=True)
class InLLMOptions(InLLMStages):
    """Options shared by single-stage methods that prune inside the language model (FastV, DART).

    Attributes:
        layer: K, the decoder layer from which only kept visual tokens remain (layers 0..K-1 see
            every token; layer K-1's state decides). Must be in ``[1, num_layers - 1]``.
    """

    layer: int = DEFAULT_LAYER

    def __post_init__(self) -> None:
        if self.layer < 1:
            raise ValueError(f"layer must be >= 1, got {self.layer}")

    def stage_layers(self, num_layers: int) -> tuple[int, ...]:
        return (self.layer,)


def _coerce(value: Any, annotation: Any, key: str, method: str) -> Any:
    """``value`` as the annotated type (int / float / bool / str / Literal, optionally ``| None``)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        if value not in args:
            raise ValueError(
                f"option {key!r} of method {method!r} must be one of {', '.join(map(repr, args))}, got {value!r}"
            )
        return value
    try:
        if annotation is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
                return value.strip().lower() in ("true", "1")
            if isinstance(value, bool):
                return value
            raise TypeError
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if annotation is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise TypeError(
            f"option {key!r} of method {method!r} must be {getattr(annotation, '__name__', annotation)}, "
            f"got {value!r}"
        ) from None
    return value
