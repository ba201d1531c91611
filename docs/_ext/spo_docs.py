"""A Sphinx extension that generates parts of the docs from the package itself.

Nothing here is drawn or typed by hand, so none of it can drift from the code:

``spo-lifecycle``
    The task lifecycle, from :data:`spo_async._state.LEGAL_MOVES`: an SVG
    diagram (laid out here, no graphviz) and the full move table.
``spo-error-tree``
    The exception tree, walked from :class:`spo_async.SPOError`'s subclasses,
    each with the first line of its docstring and a link to its reference.
``spo-cli``
    One command's reference (usage, description, every option) from an argparse
    parser: ``spo-async``'s or the emulator's.

It also points references to private modules' names (``spo_async._models.TaskResult``,
as annotations spell them) at the documented public name (``spo_async.TaskResult``).
"""

from __future__ import annotations

import argparse
import functools
import html
import importlib
import inspect
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import attrs
import spo_async
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.inspect import object_description
from spo_async._state import LEGAL_MOVES, TERMINAL_STATUSES, TaskStatus

logger = logging.getLogger(__name__)

#: The public modules: their ``__all__`` names are documented under the module's own name.
PUBLIC_MODULES = ("spo_async", "spo_async.polling", "spo_async.transport", "spo_async.testing")


@functools.cache
def public_names() -> dict[tuple[str, str], str]:
    """Where each public object is documented, by where it is defined.

    ``("spo_async._adaptive", "AdaptiveSchedule")`` maps to
    ``"spo_async.polling.AdaptiveSchedule"``: annotations and docstrings name
    the private module an object lives in, the reference documents it under the
    public module that exports it.
    """
    found: dict[tuple[str, str], str] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            home = getattr(value, "__module__", None)
            if isinstance(home, str) and getattr(value, "__qualname__", None) == name:
                found.setdefault((home, name), f"{module_name}.{name}")
    return found


def public_target(target: str) -> str | None:
    """The documented name of ``spo_async._module.Name``, if a public module exports it.

    A reference to a member (``spo_async._client.AsyncSPOClient.optimize``) is
    resolved through its class.
    """
    parts = target.split(".")
    if parts[0] != "spo_async" or not any(p.startswith("_") for p in parts[1:]):
        return None
    names = public_names()
    for split in range(len(parts) - 1, 0, -1):
        module, rest = ".".join(parts[:split]), parts[split:]
        public = names.get((module, rest[0]))
        if public is not None:
            return ".".join([public, *rest[1:]])
    return None


def resolve_private_names(
    app: Sphinx, env: Any, node: addnodes.pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Point references to a private module's public name at its documented entry.

    The package defines its names in private modules (``spo_async._models``)
    and exports them (``spo_async.TaskResult``); annotations name the former,
    the reference documents the latter.
    """
    if node.get("refdomain") != "py":
        return None
    target = public_target(node.get("reftarget", ""))
    if target is None:
        return None
    domain = env.get_domain("py")
    resolved: nodes.Element | None = domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
    )
    return resolved


# -- signatures ---------------------------------------------------------------------------

#: Names an annotation may use as they are: builtins and the constants of the language.
_AS_IS = frozenset(
    {"None", "True", "False", "str", "int", "float", "bool", "bytes", "object", "type"}
    | {"tuple", "list", "dict", "set", "frozenset", "Ellipsis"}
)
#: A (dotted) name in an annotation, not inside a string literal.
_ANNOTATION_NAME = re.compile(r"(?<![\w.'\"~])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


@functools.cache
def _public_by_identity() -> dict[int, str]:
    """Each public object (type aliases included) by ``id``: its documented dotted name."""
    found: dict[int, str] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            found.setdefault(id(getattr(module, name)), f"{module_name}.{name}")
    return found


def _lookup(name: str, namespace: dict[str, Any]) -> object | None:
    """The object ``name`` (maybe dotted) stands for in ``namespace``, or a module's."""
    head, *rest = name.split(".")
    if head in namespace:
        value: object = namespace[head]
    else:
        try:
            value = importlib.import_module(head)
        except ImportError:
            return None
    for part in rest:
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def public_annotation(text: str, namespace: dict[str, Any], aliases: dict[str, str]) -> str:
    """An annotation as written in the source, each name replaced by its public spelling.

    ``OnEvent`` (a private alias) becomes what it means, in public names;
    ``RetryPolicy`` becomes ``~spo_async.RetryPolicy`` and ``PollSchedule``
    ``~spo_async.polling.PollSchedule`` (``~``: shown without the module);
    ``Literal`` becomes ``typing.Literal``. The annotations are not evaluated,
    so names imported only for type checking are spelled out all the same.
    """

    def spell(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _AS_IS:
            return name
        if name in aliases:
            return public_annotation(aliases[name], namespace, {})
        value = _lookup(name, namespace)
        if value is None:
            for module_name in PUBLIC_MODULES:  # a name imported for type checking only
                module = importlib.import_module(module_name)
                if name in getattr(module, "__all__", ()):
                    return f"~{module_name}.{name}"
            return name
        public = _public_by_identity().get(id(value))
        if public is not None:
            return f"~{public}"
        home = getattr(value, "__module__", None)
        qualname = (
            getattr(value, "__qualname__", None)
            or getattr(value, "_name", None)
            or getattr(value, "__name__", None)  # a TypeVar
        )
        if home in {"typing", "typing_extensions"}:
            return f"typing.{qualname or name.rsplit('.', 1)[-1]}"
        if isinstance(home, str) and isinstance(qualname, str):
            return f"~{home}.{qualname}"
        return name

    return _ANNOTATION_NAME.sub(spell, text)


class _Shown:
    """Text that ``inspect.Signature`` prints as it is (an annotation, a default)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _function_name(value: Any) -> str:
    """``time.monotonic``, ``asyncio.sleep``, ``random.Random``, ``dict``."""
    module = getattr(value, "__module__", None) or ""
    public = {"asyncio.tasks": "asyncio", "builtins": ""}.get(module, module)
    return f"{public}.{value.__qualname__}" if public else value.__qualname__


def _attrs_factory(function: Any, parameter: str) -> str | None:
    """How the factory default of an attrs class's ``__init__`` parameter reads.

    attrs gives such a parameter the default ``NOTHING`` and calls the factory in
    the body: ``rng: Random = random.Random()`` says what actually happens. A
    factory that needs the instance (``takes_self``) reads ``...``: the class's
    docstring says what it builds.
    """
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    owner = getattr(module, function.__qualname__.split(".")[0], None)
    if owner is None or not attrs.has(owner):
        return None
    for field in attrs.fields(owner):
        if field.alias == parameter and isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            factory = field.default
            return "..." if factory.takes_self else f"{_function_name(factory.factory)}()"
    return None


def _default_text(value: object, function: Any, parameter: str) -> str:
    """How a default reads in a signature: its value, a function by its name."""
    if value is attrs.NOTHING:
        return _attrs_factory(function, parameter) or "..."
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        return _function_name(value)
    return object_description(value)


def public_signature(  # noqa: PLR0917 - Sphinx's event signature
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Every parameter with its type as written and its real default, in public names.

    Annotations are read as the source spells them (the package uses
    ``from __future__ import annotations``) rather than evaluated: evaluation
    fails for a whole function as soon as one name is imported for type checking
    only, and expands aliases into unreadable unions. Each name is then spelled
    as the reference documents it (see :func:`public_annotation`), and each
    default shown as its value (``timeout=900.0``, not ``DEFAULT_WAIT_TIMEOUT``;
    ``clock=time.monotonic``, not ``<built-in function monotonic>``).
    """
    if signature is None or not callable(obj):
        return None
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    namespace = dict(vars(module)) if module is not None else {}
    aliases: dict[str, str] = app.config.spo_type_aliases
    parameters = list(sig.parameters.values())
    if parameters and parameters[0].name in {"self", "cls"}:
        parameters = parameters[1:]

    def annotation(value: object) -> object:
        if value is inspect.Parameter.empty:
            return value
        text = value if isinstance(value, str) else inspect.formatannotation(value)
        return _Shown(public_annotation(text, namespace, aliases))

    shown = [
        p.replace(
            annotation=annotation(p.annotation),
            default=(
                p.default if p.default is p.empty else _Shown(_default_text(p.default, obj, p.name))
            ),
        )
        for p in parameters
    ]
    returns = annotation(sig.return_annotation)
    text = str(sig.replace(parameters=shown, return_annotation=inspect.Signature.empty))
    return text, (repr(returns) if returns is not inspect.Parameter.empty else return_annotation)


def skip_noise(  # noqa: PLR0917 - Sphinx's event signature
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Leave out an ``__init__`` or ``__new__`` that the standard library wrote.

    ``autodoc_class_signature = "separated"`` documents both as members; a
    protocol's (``PollSchedule``, ``Transport``) is typing's
    ``__init__(*args, **kwargs)``, an enum's is ``Enum.__new__(value)``: neither
    tells a reader anything.
    """
    if name in {"__init__", "__new__"} and getattr(obj, "__module__", None) in {"typing", "enum"}:
        return True
    return None


def public_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Name a private base class (``_TaskEvent``) by its nearest public ancestor.

    "Bases:" should list classes a reader can look up; a private base is an
    implementation detail, so it is replaced by the first class of its MRO
    that is not private (``object`` for ``_TaskEvent``).
    """
    shown: list[type] = []
    for base in bases:
        public = next(c for c in base.__mro__ if not c.__name__.startswith("_"))
        if public not in shown:
            shown.append(public)
    bases[:] = shown


def attrs_defaults(  # noqa: PLR0917 - Sphinx's event signature
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """End the entry of each field of an attrs class with its default value.

    The entry of a field shows its type but not its default (a slotted attrs
    class keeps no class attribute to read it from), so it is read from
    :func:`attrs.fields` here.
    """
    if what != "attribute" or "." not in name:
        return
    owner_name, field_name = name.rsplit(".", 1)
    module_name, _, class_name = owner_name.rpartition(".")
    try:
        owner = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        return
    if not attrs.has(owner):
        return
    field = attrs.fields_dict(owner).get(field_name)
    if field is None or field.default is attrs.NOTHING:
        return
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:  # built from the other fields: the class's docstring says how
            return
        shown = f"a new ``{_function_name(default.factory)}()``"
    else:
        shown = f"``{object_description(default)}``"
    if lines and lines[-1].strip():
        lines.append("")
    lines.append(f"Default: {shown}.")


# -- small node builders ------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[nodes.Node | str]]) -> nodes.table:
    table = nodes.table(classes=["spo-generated"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)

    def row_of(cells: Sequence[nodes.Node | str]) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            paragraph += nodes.Text(cell) if isinstance(cell, str) else cell
            entry += paragraph
            row += entry
        return row

    head = nodes.thead()
    head += row_of(list(header))
    group += head
    body = nodes.tbody()
    for cells in rows:
        body += row_of(cells)
    group += body
    return table


# -- the lifecycle ------------------------------------------------------------------------


def lifecycle_layout(statuses: Sequence[Any], moves: Any) -> dict[Any, tuple[float, float]]:
    """Place each status: a main row left to right, terminals in a column, catch-alls below.

    The main row holds the known non-terminal statuses, the ones that may move to
    more statuses first (a task starts where it can still go anywhere). A status
    that may be entered from, and may leave to, every non-terminal status (the
    catch-all ``unknown``) goes below the main row.
    """
    terminal = [s for s in statuses if moves[s] == frozenset({s})]
    open_ = [s for s in statuses if s not in terminal]
    catch_all = [
        s for s in open_ if all(s in moves[t] and t in moves[s] for t in open_ if t is not s)
    ]
    main = [s for s in open_ if s not in catch_all]
    if not main:  # everything is a catch-all: keep them in one row
        main, catch_all = catch_all, []
    main.sort(key=lambda s: (-len(moves[s]), statuses.index(s)))
    pos: dict[Any, tuple[float, float]] = {}
    x0, step, y_main = 90.0, 220.0, 120.0
    for i, s in enumerate(main):
        pos[s] = (x0 + i * step, y_main)
    x_end = x0 + len(main) * step + 30
    spread = 140.0
    for i, s in enumerate(terminal):
        offset = (i - (len(terminal) - 1) / 2) * spread if len(terminal) > 1 else 0.0
        pos[s] = (x_end, y_main + offset)
    mid = x0 + (len(main) - 1) * step / 2
    for i, s in enumerate(catch_all):
        pos[s] = (mid + i * step, y_main + 140)
    return pos


def _boundary(
    center: tuple[float, float], toward: tuple[float, float], w: float, h: float
) -> tuple[float, float]:
    """Where the ray from ``center`` toward ``toward`` leaves a ``2w`` x ``2h`` box."""
    (cx, cy), (tx, ty) = center, toward
    dx, dy = tx - cx, ty - cy
    scale = min(w / abs(dx) if dx else math.inf, h / abs(dy) if dy else math.inf)
    return cx + dx * scale, cy + dy * scale


def _distance_to_box(
    p: tuple[float, float], center: tuple[float, float], w: float, h: float
) -> float:
    dx = max(abs(p[0] - center[0]) - w, 0.0)
    dy = max(abs(p[1] - center[1]) - h, 0.0)
    return math.hypot(dx, dy)


def _bezier(
    a: tuple[float, float], c: tuple[float, float], b: tuple[float, float], t: float
) -> tuple[float, float]:
    u = 1 - t
    return (
        u * u * a[0] + 2 * u * t * c[0] + t * t * b[0],
        u * u * a[1] + 2 * u * t * c[1] + t * t * b[1],
    )


def _control_point(
    a: tuple[float, float],
    b: tuple[float, float],
    others: Sequence[tuple[float, float]],
    w: float,
    h: float,
) -> tuple[float, float]:
    """A control point that bends the edge ``a``-``b`` around every other box."""
    mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    length = math.hypot(b[0] - a[0], b[1] - a[1]) or 1.0
    normal = (-(b[1] - a[1]) / length, (b[0] - a[0]) / length)
    clearance = 12.0

    def clear(ctrl: tuple[float, float]) -> bool:
        return all(
            _distance_to_box(_bezier(a, ctrl, b, i / 40), o, w, h) > clearance
            for o in others
            for i in range(4, 37)
        )

    for bend in range(0, 400, 10):
        for sign in (1, -1):
            ctrl = (mid[0] + sign * normal[0] * bend, mid[1] + sign * normal[1] * bend)
            if clear(ctrl):
                return ctrl
    return mid


def lifecycle_svg(statuses: Sequence[Any], moves: Any) -> str:
    """Render the move table as an SVG graph: one box per status, one arrow per move.

    Edges are quadratic curves, straight unless a box is in the way, in which case
    they bend just enough to pass it.
    """
    pos = lifecycle_layout(statuses, moves)
    w, h = 56.0, 19.0  # half sizes of a box
    width = max(x for x, _ in pos.values()) + w + 20
    height = max(y for _, y in pos.values()) + h + 30
    top = min(y for _, y in pos.values()) - h - 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spo-lifecycle" role="img" '
        f'viewBox="0 {top:.0f} {width:.0f} {height - top:.0f}" '
        f'style="max-width:{width:.0f}px;width:100%;height:auto">',
        "<title>The task lifecycle, generated from spo_async._state.LEGAL_MOVES</title>",
        "<defs>",
        '<marker id="spo-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="currentColor"/></marker>',
        "</defs>",
        '<g fill="none" stroke="currentColor" stroke-width="1.4">',
    ]
    drawn: set[frozenset[Any]] = set()
    for a in statuses:
        for b in statuses:
            if a is b or b not in moves[a]:
                continue
            pair = frozenset({a, b})
            if pair in drawn:
                continue
            drawn.add(pair)
            both = a in moves[b]
            others = [pos[s] for s in statuses if s is not a and s is not b]
            ctrl = _control_point(pos[a], pos[b], others, w, h)
            x1, y1 = _boundary(pos[a], ctrl, w + 4, h + 4)
            x2, y2 = _boundary(pos[b], ctrl, w + 4, h + 4)
            dash = ' stroke-dasharray="5 4"' if both else ""
            start = ' marker-start="url(#spo-arrow)"' if both else ""
            arrow = "&#8596;" if both else "&#8594;"
            parts.append(
                f'<path d="M{x1:.1f},{y1:.1f} Q{ctrl[0]:.1f},{ctrl[1]:.1f} {x2:.1f},{y2:.1f}"'
                f'{dash}{start} marker-end="url(#spo-arrow)"><title>'
                f"{html.escape(str(a.value))} {arrow} {html.escape(str(b.value))}</title></path>"
            )
    parts.append("</g>")
    for s in statuses:
        x, y = pos[s]
        terminal = moves[s] == frozenset({s})
        stroke = "2.6" if terminal else "1.4"
        parts.append(
            f'<rect x="{x - w:.1f}" y="{y - h:.1f}" width="{2 * w:.1f}" height="{2 * h:.1f}" '
            f'rx="9" fill="none" stroke="currentColor" stroke-width="{stroke}"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{y + 5:.1f}" text-anchor="middle" fill="currentColor" '
            f'font-family="monospace" font-size="15">{html.escape(str(s.value))}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


class LifecycleDirective(SphinxDirective):
    """``spo-lifecycle``: the state diagram and move table of a task."""

    has_content = False
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {"table-only": directives.flag}

    def run(self) -> list[nodes.Node]:
        """Build the diagram (HTML only) and the move table from the SDK's tables."""
        statuses = list(TaskStatus)
        result: list[nodes.Node] = []
        if "table-only" not in self.options:
            figure = nodes.container(classes=["spo-lifecycle-figure"])
            figure += nodes.raw("", lifecycle_svg(statuses, LEGAL_MOVES), format="html")
            repeat = [s.value for s in statuses if s in LEGAL_MOVES[s]]
            caption = nodes.paragraph(classes=["spo-caption"])
            caption += nodes.Text(
                "Solid arrow: a one-way move. Dashed, two-headed: either way. Thick box: "
                "terminal. A later snapshot may also repeat the status of the one before ("
                + ", ".join(repeat)
                + "). Generated from "
            )
            caption += nodes.literal("spo_async._state.LEGAL_MOVES", "spo_async._state.LEGAL_MOVES")
            caption += nodes.Text(" at build time.")
            figure += caption
            result.append(figure)
        header = ["earlier ↓  later →", *(s.value for s in statuses), "terminal"]
        rows = []
        for a in statuses:
            cells: list[nodes.Node | str] = [nodes.literal(a.value, a.value)]
            cells += ["✓" if b in LEGAL_MOVES[a] else "·" for b in statuses]
            cells.append("yes" if a in TERMINAL_STATUSES else "no")
            rows.append(cells)
        result.append(_table(header, rows))
        return result


# -- the error tree -----------------------------------------------------------------------


def error_tree(root: type[BaseException]) -> list[tuple[int, type[BaseException]]]:
    """The public subclasses of ``root``, depth first, in definition order, with depths."""
    public = {getattr(spo_async, n) for n in spo_async.__all__}
    out: list[tuple[int, type[BaseException]]] = []

    def walk(cls: type[BaseException], depth: int) -> None:
        out.append((depth, cls))
        children = [c for c in cls.__subclasses__() if c in public]
        # The error module's own classes first, in definition order, then the others'.
        children.sort(key=lambda c: (c.__module__ != root.__module__, c.__module__, _line(c)))
        for child in children:
            walk(child, depth + 1)

    walk(root, 0)
    return out


def _line(cls: type) -> int:
    return inspect.getsourcelines(cls)[1]


def _summary(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n", 1)[0].replace("\n", " ")


class ErrorTreeDirective(SphinxDirective):
    """``spo-error-tree``: every public exception under ``SPOError``, nested, with links.

    Use it inside ``{eval-rst}``: the summaries are docstring text, which is rST.
    """

    has_content = False

    def run(self) -> list[nodes.Node]:
        """Walk ``SPOError.__subclasses__()`` and parse it as a nested rST bullet list."""
        lines: list[str] = []
        for depth, cls in error_tree(spo_async.SPOError):
            indent = "  " * depth
            builtins = [
                b.__name__
                for b in cls.__bases__
                if b.__module__ == "builtins" and b is not Exception
            ]
            also = f" (also ``{', '.join(builtins)}``)" if builtins else ""
            if lines:
                lines.append("")
            lines.append(f"{indent}- :class:`~spo_async.{cls.__name__}`{also} — {_summary(cls)}")
        container = nodes.container(classes=["spo-error-tree"])
        self.state.nested_parse(StringList(lines), self.content_offset, container)
        return [container]


# -- the command lines --------------------------------------------------------------------


#: The command lines documented, by the name ``spo-cli`` takes: module and function.
PARSERS: dict[str, tuple[str, str]] = {
    "spo-async": ("spo_async.cli._parser", "build_parser"),
    "spo_async.testing": ("spo_async.testing.__main__", "build_parser"),
}
HELP_WIDTH = 88


def load_parser(program: str) -> argparse.ArgumentParser:
    """Build the named program's argparse parser, with a fixed help width."""
    module, function = PARSERS[program]
    parser: argparse.ArgumentParser = getattr(importlib.import_module(module), function)()
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's sub-command parsers, by name, in the order they were added."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _fixed_width(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make the parser's help the same width on every machine (not the terminal's)."""
    if not getattr(parser, "_spo_docs_fixed", False):
        base: Callable[..., argparse.HelpFormatter] = parser.formatter_class

        def formatter(prog: str) -> argparse.HelpFormatter:
            return base(prog, width=HELP_WIDTH)

        parser.formatter_class = formatter  # type: ignore[assignment]
        parser._spo_docs_fixed = True  # type: ignore[attr-defined]
    return parser


def _option_rows(parser: argparse.ArgumentParser) -> list[list[nodes.Node | str]]:
    formatter = _fixed_width(parser)._get_formatter()
    rows: list[list[nodes.Node | str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = ""
            if action.nargs != 0:
                metavar = " " + formatter._format_args(action, action.dest.upper())
            spelled = ", ".join(f"{o}{metavar}" for o in action.option_strings)
        else:
            spelled = formatter._format_args(action, action.dest)
        text = formatter._expand_help(action) if action.help else ""
        if (
            action.default not in (None, False, argparse.SUPPRESS, [])
            and action.option_strings
            and "default" not in text
        ):
            text += f" (default {action.default})"
        rows.append([nodes.literal(spelled, spelled), text])
    return rows


class CliDirective(SphinxDirective):
    """``spo-cli PROGRAM [SUBCOMMAND]``: usage, description and options from the parser."""

    required_arguments = 1
    optional_arguments = 1
    final_argument_whitespace = False
    has_content = False

    def run(self) -> list[nodes.Node]:
        """Load the parser, pick the sub-command, and render it."""
        program = self.arguments[0]
        try:
            parser = load_parser(program)
            if len(self.arguments) > 1:
                parser = subcommands(parser)[self.arguments[1]]
        except Exception as exc:  # reported as a build warning, with its cause
            # One broken command line must not stop the whole build (with -W it still fails
            # it, but every other page is checked and the cause is named).
            logger.warning(
                "spo-cli: cannot build the parser of %r: %s: %s",
                " ".join(self.arguments),
                type(exc).__name__,
                exc,
                location=self.get_location(),
            )
            return []
        _fixed_width(parser)
        out: list[nodes.Node] = []
        usage = parser.format_usage().strip()
        out.append(nodes.literal_block(usage, usage, language="text"))
        if parser.description:
            out.append(nodes.paragraph(text=parser.description))
        subs = subcommands(parser)
        if subs:
            out.append(
                _table(
                    ["command", "what it does"],
                    [
                        [nodes.literal(name, name), _help_of(parser, name) or sub.description or ""]
                        for name, sub in subs.items()
                    ],
                )
            )
        rows = _option_rows(parser)
        if rows:
            out.append(_table(["option", "meaning"], rows))
        if parser.epilog:
            epilog = parser.epilog.strip()
            out.append(nodes.literal_block(epilog, epilog, language="text"))
        return out


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def keep_attribute_docstrings() -> None:
    """Stop napoleon from reading ``#:`` comments as ``type: description``.

    Napoleon parses an attribute's docstring Google-style, so a comment such as
    ``#: Only the final result: looks at middle rounds can be skipped.`` would
    turn ``Only the final result`` into a type. The package writes plain
    sentences there; napoleon is only wanted for ``Attributes:`` sections.
    """

    def plain(self: GoogleDocstring) -> list[str]:
        return list(self._consume_to_end())

    GoogleDocstring._parse_attribute_docstring = plain  # type: ignore[method-assign]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and the reference resolver."""
    app.setup_extension("sphinx.ext.napoleon")
    app.add_config_value("spo_type_aliases", {}, "env", types=[dict])
    keep_attribute_docstrings()
    app.connect("missing-reference", resolve_private_names)
    app.connect("autodoc-process-signature", public_signature)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("autodoc-skip-member", skip_noise)
    app.connect("autodoc-process-docstring", attrs_defaults)
    app.add_directive("spo-lifecycle", LifecycleDirective)
    app.add_directive("spo-error-tree", ErrorTreeDirective)
    app.add_directive("spo-cli", CliDirective)
    app.add_css_file("spo.css")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
