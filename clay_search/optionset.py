"""Options defined once: a dataclass field per option, from which the CLI and Python derive.

An option set is a dataclass deriving from :class:`OptionSet` whose fields are made with
:func:`opt`: each field carries the option's name (the Python keyword; the CLI flag is the name
with dashes unless ``flag=`` says otherwise), type (the annotation), default, help text, how a
given value is parsed and how it is checked. From those fields come

- :meth:`OptionSet.from_options`: parse and check keyword values (Python values or CLI strings),
- :meth:`OptionSet.cli_parameters`: the typer parameters of a command,
- :meth:`OptionSet.python_signature` and :meth:`OptionSet.options_doc`: the signature and the
  docstring lines of the Python entry point,
- :meth:`OptionSet.option_info`: one option's ``typer.Option`` (for commands that declare their
  parameters by hand, as ``Annotated[type, Set.option_info(name)]``),

as rasterio's ``rio/options.py`` defines each option once for every command. Used by
``clay_search.ingest.params.IngestParams`` (ingest), ``clay_search.training.TrainParams``
(``train``), ``clay_search.evaluation.EvalParams`` (``eval``) and the shared options of
``clay-search finetune``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

__all__ = ["OptionSet", "choice", "derive", "opt", "positive"]

T = TypeVar("T", bound="OptionSet")


def opt(
    default: Any,
    help: str,  # noqa: A002 - the option's help text, as typer/click call it
    *,
    flag: str | None = None,
    short: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
    cli_type: Any = None,
    cli: bool = True,
    metavar: str | None = None,
) -> Any:
    """A field of an :class:`OptionSet`: default, help text and how the value is read/checked.

    ``flag`` is the CLI declaration when it is not ``--name-with-dashes`` (e.g.
    ``"--resume/--no-resume"`` for an on/off switch, ``"--max-time"`` for ``max_time_s``);
    ``short`` adds a one-letter alias. ``parse`` turns what a user gives (a CLI string, a Python
    value) into the field's type; ``check`` returns an error message for a value that cannot
    work. ``cli_type`` is the type the CLI reads when it differs from the field's (``str`` for
    comma-separated lists); ``cli=False`` keeps an option Python-only; ``metavar`` names the
    value in ``--help`` (``RANK``).
    """
    meta = {
        "help": help,
        "flag": flag,
        "short": short,
        "parse": parse,
        "check": check,
        "cli_type": cli_type,
        "cli": cli,
        "metavar": metavar,
    }
    return dataclasses.field(default=default, metadata=meta)


def positive(flag: str, *, optional: bool = False) -> Callable[[Any], str | None]:
    """A ``check`` for numbers > 0 (``optional``: None is allowed too)."""

    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        return None if v is not None and v > 0 else f"{flag} {v} must be a positive number"

    return check


def choice(flag: str, choices: Sequence[str]) -> Callable[[Any], str | None]:
    """A ``check`` for one of ``choices``."""
    return lambda v: None if v in choices else f"{flag} {v!r} must be one of {', '.join(choices)}"


def _strip_none(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


class OptionSet:
    """Base of option dataclasses (see the module docstring).

    Subclasses are ``@dataclass`` classes whose option fields come from :func:`opt`; a field
    whose metadata has ``internal=True`` is not an option. ``option_error`` is the exception a
    bad value raises (a :class:`~clay_search.errors.ClaySearchError` subclass that inherits
    ``ValueError``, so the CLI prints one line and exits with status 2).
    """

    option_error: ClassVar[type[Exception]] = ValueError
    #: what the options configure, for the error naming an unknown option ("ingest", "train")
    option_kind: ClassVar[str] = "the"

    # -- the fields ----------------------------------------------------------------------------
    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The option fields, in order (``metadata["cli"]`` says whether the CLI has one)."""
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]  # type: ignore[arg-type]

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Field name -> the field's type, resolved (``list[str] | None``, not a string)."""
        return typing.get_type_hints(cls)

    @classmethod
    def flag_of(cls, f: dataclasses.Field) -> str:
        """The CLI declaration of field ``f`` (``--chip-size``, ``--resume/--no-resume``)."""
        return f.metadata.get("flag") or "--" + f.name.replace("_", "-")

    # -- parsing ---------------------------------------------------------------------------------
    @classmethod
    def from_options(cls: type[T], **options: Any) -> T:
        """Parse and check ``options`` (Python values or CLI strings); unknown names raise
        ``TypeError``, bad values :attr:`option_error`."""
        fields = {f.name: f for f in cls.option_fields()}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise TypeError(
                f"unknown {cls.option_kind} option(s) {', '.join(unknown)}; the options are "
                f"{', '.join(fields)}"
            )
        hints = cls.option_types()
        values = {}
        missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in missing if n not in options]
        if missing:
            raise TypeError(f"missing {cls.option_kind} option(s) {', '.join(missing)}")
        for name, f in fields.items():
            v = options.get(name, f.default)
            parse = f.metadata.get("parse")
            base, _ = _strip_none(hints[name])
            if parse is not None:
                v = parse(v)
            elif v is not None and base in (int, float) and not isinstance(v, bool):
                try:
                    v = base(v)
                except (TypeError, ValueError):
                    flag = cls.flag_of(f).split("/")[0]
                    raise cls.option_error(f"{flag} {v!r} must be a number") from None
            elif base is bool and v is not None:
                v = bool(v)
            check = f.metadata.get("check")
            if check is not None and (msg := check(v)):
                raise cls.option_error(msg)
            values[name] = v
        return cls(**values)

    def options(self) -> dict[str, Any]:
        """The option values by name (a shallow copy, no internal fields)."""
        return {f.name: getattr(self, f.name) for f in self.option_fields()}

    # -- the derived interfaces --------------------------------------------------------------
    @classmethod
    def option_info(cls, name: str) -> Any:
        """The ``typer.Option(...)`` of option ``name`` (flag, short flag and help from its
        field), for a command that lists its parameters itself:
        ``FreezeOpt = Annotated[bool, Opts.option_info("freeze")]`` (a static alias, so type
        checkers see the type)."""
        import typer

        f = {f.name: f for f in cls.option_fields()}[name]
        decls = [cls.flag_of(f)] + ([f.metadata["short"]] if f.metadata.get("short") else [])
        return typer.Option(*decls, help=f.metadata["help"], metavar=f.metadata.get("metavar"))

    @classmethod
    def _cli_annotation(cls, f: dataclasses.Field, hints: dict[str, Any]) -> Any:
        from typing import Annotated

        cli_type = f.metadata.get("cli_type")
        typ = hints[f.name] if cli_type is None else cli_type | None
        return Annotated[typ, cls.option_info(f.name)]

    @classmethod
    def cli_parameters(cls, *, exclude: Sequence[str] = ()) -> list[inspect.Parameter]:
        """typer parameters (``Annotated[type, typer.Option(...)]``) of every CLI option."""
        hints = cls.option_types()
        return [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=f.default,
                annotation=cls._cli_annotation(f, hints),
            )
            for f in cls.option_fields()
            if f.metadata.get("cli", True) and f.name not in exclude
        ]

    @classmethod
    def python_signature(
        cls,
        head: Sequence[inspect.Parameter] = (),
        tail: Sequence[inspect.Parameter] = (),
        return_annotation: Any = inspect.Signature.empty,
    ) -> inspect.Signature:
        """``head`` (positional), every option as a keyword-only parameter, then ``tail``."""
        hints = cls.option_types()
        opts = [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
            )
            for f in cls.option_fields()
        ]
        return inspect.Signature([*head, *opts, *tail], return_annotation=return_annotation)

    @classmethod
    def options_doc(cls) -> str:
        """One line per option: name, default and help (appended to the entry point's
        docstring)."""
        return "\n".join(
            f"    ``{f.name}`` (default ``{f.default!r}``): {f.metadata['help']}"
            for f in cls.option_fields()
        )


F = TypeVar("F", bound=Callable[..., Any])


def derive(
    func: F,
    options: type[OptionSet],
    *,
    head: Sequence[inspect.Parameter] = (),
    tail: Sequence[inspect.Parameter] = (),
    return_annotation: Any = inspect.Signature.empty,
) -> F:
    """Give the Python entry point ``func(*head, **options, *tail)`` its derived signature and
    the options' lines at the end of its docstring (``Options (keyword-only):``)."""
    func.__signature__ = options.python_signature(head, tail, return_annotation)  # type: ignore[attr-defined]
    func.__doc__ = (func.__doc__ or "").rstrip() + "\n\n" + options.options_doc() + "\n"
    return func
