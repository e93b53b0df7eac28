"""JsonLogic compiled to nested Python closures, with flagd's semantics.

``compile_rule(rule, flag_key=..., operations=...)`` turns a targeting rule
into one function ``Root -> value`` built once per flag-set change; an
evaluation then runs closures only (no dict walking, no operator lookup, no
copy of the context). Where the reference evaluator (openfeature-flagd-core,
through its JsonLogic engine) is the contract, the rules are its rules:

- a dict with exactly one key is an operation, any other dict is a literal
  (returned as is); lists evaluate item by item; scalars are themselves;
- ``if``/``?:``, ``and``, ``or`` are lazy; ``map``, ``filter``, ``reduce``,
  ``all``, ``some``, ``none`` evaluate their second argument against each
  item; every other operation evaluates all its arguments first (extras too);
- an unknown operation raises ``UnknownOperation`` when it is *reached*
  (an unreached ``$ref`` to nothing is harmless, as in flagd).

The root of an evaluation is a ``Root`` tuple ``(attributes, targeting_key,
now)``; the flag key is a constant of the compiled rule. ``var`` on the root
reads ``targetingKey``, ``$flagd.flagKey`` and ``$flagd.timestamp`` from it
as flagd injects them, and builds flagd's context dict only for whole-context
reads (``{"var": ""}``, ``missing``).

Invariants: a compiled rule is pure (its result depends on the root only;
nothing is cached across evaluations) and never mutates the root or the
attributes. Constant subtrees are folded at compile time only when their
evaluation succeeds, so an error still happens at evaluation, when reached.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flags import coercion as c

Fn = Callable[[Any], Any]
Root = tuple[Mapping[str, Any], Any, int]
"""(context attributes, targeting key or None, now in Unix seconds)."""


class UnknownOperation(Exception):
    """A rule reached an operation flagd does not know (flagd: PARSE_ERROR)."""


class _Varies:
    def __repr__(self) -> str:
        return "VARIES"


VARIES: Any = _Varies()
"""The ``const`` of a node whose value depends on the data."""

Node = tuple[Fn, Any]
"""A compiled node: its function and its constant value (or VARIES)."""


@dataclass(slots=True)
class CompileContext:
    flag_key: str
    operations: Mapping[str, OperationCompiler]
    root: bool = True
    """True while compiling against the evaluation root, False inside map/filter/... bodies."""
    uses_now: bool = field(default=False)
    """Set when the rule may read ``$flagd.timestamp``: the evaluator then reads the clock."""

    def inner(self) -> CompileContext:
        """The context for an iteration body: the data is the current item."""
        child = CompileContext(self.flag_key, self.operations, root=False)
        return child

    def root_dict(self, root: Root) -> dict[str, Any]:
        """flagd's JsonLogic data: the attributes, ``$flagd`` and ``targetingKey``."""
        data = dict(root[0])
        data["$flagd"] = {"flagKey": self.flag_key, "timestamp": root[2]}
        data["targetingKey"] = root[1]
        return data


OperationCompiler = Callable[[list[Node], CompileContext], Node]
"""Builds an eagerly evaluated operation from its compiled arguments."""


def const(value: Any) -> Node:
    return (lambda _data: value), value


def compile_rule(rule: Any, cx: CompileContext) -> Node:
    return compile_node(rule, cx)


def compile_node(node: Any, cx: CompileContext) -> Node:
    if isinstance(node, list):
        items = [compile_node(item, cx) for item in node]
        if all(value is not VARIES for _fn, value in items):
            return const([value for _fn, value in items])
        fns = [fn for fn, _value in items]
        return (lambda data: [fn(data) for fn in fns]), VARIES
    if not isinstance(node, dict) or len(node) != 1:
        return const(node)
    ((op, raw_args),) = node.items()
    args: list[Any] = raw_args if isinstance(raw_args, list) else [raw_args]
    lazy = _LAZY.get(op)
    if lazy is not None:
        return lazy(args, cx)
    compiled = [compile_node(arg, cx) for arg in args]
    if op == "var":
        return _var(compiled, cx)
    builder = cx.operations.get(op)
    if builder is None:
        message = f"unknown JsonLogic operation {op!r}"

        def unknown(data: Any) -> Any:
            for fn, _value in compiled:
                fn(data)
            raise UnknownOperation(message)

        return unknown, VARIES
    return builder(compiled, cx)


def fold(fn: Fn, args: list[Node]) -> Node:
    """``fn`` as a node, evaluated now if its arguments are constant and it succeeds."""
    if all(value is not VARIES for _fn, value in args):
        try:
            return const(fn(None))
        except Exception:  # the error belongs to evaluation time
            return fn, VARIES
    return fn, VARIES


# --- var -------------------------------------------------------------------------


def _var(args: list[Node], cx: CompileContext) -> Node:
    key_fn, key = args[0] if args else const(None)
    default_fn, default = args[1] if len(args) > 1 else const(None)
    extras = [fn for fn, value in args[2:] if value is VARIES]
    if key is VARIES or default is VARIES or extras:
        return _dynamic_var(key_fn, default_fn, extras, cx), VARIES
    if not cx.root:
        if key is None or key == "":
            return (lambda data: data), VARIES
        if isinstance(key, str):
            props = key.split(".")
            return (lambda data: c.walk(data, props, default)), VARIES
        return (lambda data: c.lookup(data, key, default)), VARIES
    if not isinstance(key, str) or key == "":
        if key is None or key == "":
            cx.uses_now = True
        root_dict = cx.root_dict
        return (lambda root: c.lookup(root_dict(root), key, default)), VARIES
    return _root_path(key.split("."), default, cx)


def _root_path(props: list[str], default: Any, cx: CompileContext) -> Node:
    """A constant dotted path read from the root without building flagd's dict."""
    head, rest = props[0], props[1:]
    if head == "targetingKey":
        if not rest:
            return (lambda root: default if root[1] is None else root[1]), VARIES
        return (lambda root: c.walk(root[1], rest, default)), VARIES
    if head == "$flagd":
        if rest == ["flagKey"]:
            return const(cx.flag_key)
        cx.uses_now = True
        if rest == ["timestamp"]:
            return (lambda root: root[2]), VARIES
        flag_key = cx.flag_key
        return (lambda root: c.walk({"flagKey": flag_key, "timestamp": root[2]}, rest, default)), VARIES
    if not rest:
        if default is None:
            return (lambda root: root[0].get(head)), VARIES

        def attribute(root: Root) -> Any:
            value = root[0].get(head)
            return default if value is None else value

        return attribute, VARIES
    return (lambda root: c.walk(root[0].get(head), rest, default)), VARIES


def _dynamic_var(key_fn: Fn, default_fn: Fn, extras: list[Fn], cx: CompileContext) -> Fn:
    """``var`` whose key or default is computed: resolved in full at evaluation."""
    if not cx.root:

        def item_var(data: Any) -> Any:
            key, default = key_fn(data), default_fn(data)
            for fn in extras:
                fn(data)
            return c.lookup(data, key, default)

        return item_var
    cx.uses_now = True
    root_dict = cx.root_dict

    def root_var(root: Root) -> Any:
        key, default = key_fn(root), default_fn(root)
        for fn in extras:
            fn(root)
        return c.lookup(root_dict(root), key, default)

    return root_var


# --- lazy operations: if, and, or, and the iterating ones ------------------------------


def _if(args: list[Any], cx: CompileContext) -> Node:
    nodes = [compile_node(arg, cx) for arg in args]
    if not nodes:
        return const(None)
    # Fold leading constant conditions: a true one decides, a false one drops its pair.
    while len(nodes) >= 2 and nodes[0][1] is not VARIES:
        if c.truthy(nodes[0][1]):
            return nodes[1]
        nodes = nodes[2:]
    if not nodes:
        return const(None)
    if len(nodes) == 1:
        return nodes[0]
    pairs = [(nodes[i][0], nodes[i + 1][0]) for i in range(0, len(nodes) - 1, 2)]
    otherwise = nodes[-1][0] if len(nodes) % 2 else (lambda _data: None)
    truthy = c.truthy
    if len(pairs) == 1:
        ((cond, then),) = pairs

        def if_else(data: Any) -> Any:
            test = cond(data)
            if test is True or (test is not False and truthy(test)):
                return then(data)
            return otherwise(data)

        return if_else, VARIES

    def if_chain(data: Any) -> Any:
        for cond, then in pairs:
            test = cond(data)
            if test is True or (test is not False and truthy(test)):
                return then(data)
        return otherwise(data)

    return if_chain, VARIES


def _and(args: list[Any], cx: CompileContext) -> Node:
    nodes = [compile_node(arg, cx) for arg in args]
    if not nodes:
        return const(None)
    fns = [fn for fn, _value in nodes]
    truthy = c.truthy

    def and_(data: Any) -> Any:
        current = None
        for fn in fns:
            current = fn(data)
            if current is False or (current is not True and not truthy(current)):
                return current
        return current

    return fold(and_, nodes)


def _or(args: list[Any], cx: CompileContext) -> Node:
    nodes = [compile_node(arg, cx) for arg in args]
    if not nodes:
        return const(None)
    fns = [fn for fn, _value in nodes]
    truthy = c.truthy

    def or_(data: Any) -> Any:
        current = None
        for fn in fns:
            current = fn(data)
            if current is True or (current is not False and truthy(current)):
                return current
        return current

    return fold(or_, nodes)


def _iterating(
    combine: Callable[[Fn, list[Any]], Any], empty: Any, min_args: int
) -> Callable[[list[Any], CompileContext], Node]:
    """map/filter/all/some/none: ``combine(body, items)`` over a list, ``empty`` otherwise."""

    def build(args: list[Any], cx: CompileContext) -> Node:
        if len(args) < min_args:
            return const(empty() if callable(empty) else empty)
        items_fn, _items = compile_node(args[0], cx)
        body, _body_value = compile_node(args[1], cx.inner()) if len(args) > 1 else const(None)

        def iterate(data: Any) -> Any:
            items = items_fn(data)
            if not isinstance(items, list):
                return empty() if callable(empty) else empty
            return combine(body, items)

        return iterate, VARIES

    return build


def _reduce(args: list[Any], cx: CompileContext) -> Node:
    if not args:
        return const(None)
    items_fn, _items = compile_node(args[0], cx)
    body, _body_value = compile_node(args[1], cx.inner()) if len(args) > 1 else const(None)
    initial = args[2] if len(args) > 2 else None  # the reference does not evaluate it

    def reduce_(data: Any) -> Any:
        items = items_fn(data)
        if not isinstance(items, list):
            return initial
        scope: dict[str, Any] = {"accumulator": initial}
        for item in items:
            scope["current"] = item
            scope["accumulator"] = body(scope)
        return scope["accumulator"]

    return reduce_, VARIES


_LAZY: dict[str, Callable[[list[Any], CompileContext], Node]] = {
    "if": _if,
    "?:": _if,
    "and": _and,
    "or": _or,
    "map": _iterating(lambda body, items: [body(item) for item in items], list, 1),
    "filter": _iterating(lambda body, items: [item for item in items if c.truthy(body(item))], list, 2),
    "all": _iterating(lambda body, items: bool(items) and all(c.truthy(body(i)) for i in items), False, 2),
    "some": _iterating(lambda body, items: any(c.truthy(body(i)) for i in items), False, 2),
    "none": _iterating(lambda body, items: not any(c.truthy(body(i)) for i in items), True, 2),
    "reduce": _reduce,
}


# --- eager operations ------------------------------------------------------------------


def eager(impl: Callable[[list[Any]], Any], pure: bool = True) -> OperationCompiler:
    """An operation over its evaluated argument list (``impl(values)``)."""

    def build(args: list[Node], cx: CompileContext) -> Node:
        fns = [fn for fn, _value in args]
        if len(fns) == 1:
            (only,) = fns
            node_fn: Fn = lambda data: impl([only(data)])  # noqa: E731
        elif len(fns) == 2:
            first, second = fns
            node_fn = lambda data: impl([first(data), second(data)])  # noqa: E731
        else:
            node_fn = lambda data: impl([fn(data) for fn in fns])  # noqa: E731
        return fold(node_fn, args) if pure else (node_fn, VARIES)

    return build


def _arg(values: list[Any], index: int) -> Any:
    return values[index] if index < len(values) else None


def binary(op2: Callable[[Any, Any], Any]) -> OperationCompiler:
    """``op2(a, b)`` on the first two arguments (missing ones are None, extras evaluated)."""

    def build(args: list[Node], cx: CompileContext) -> Node:
        padded = args + [const(None)] * (2 - len(args))
        (fa, a), (fb, b) = padded[0], padded[1]
        extras = [fn for fn, value in padded[2:] if value is VARIES]
        if extras:
            return fold(lambda data: op2(fa(data), fb(data)) if _run(extras, data) else None, padded)
        if b is not VARIES and a is VARIES:
            return fold(lambda data: op2(fa(data), b), padded)
        if a is not VARIES and b is VARIES:
            return fold(lambda data: op2(a, fb(data)), padded)
        return fold(lambda data: op2(fa(data), fb(data)), padded)

    return build


def _run(fns: list[Fn], data: Any) -> bool:
    for fn in fns:
        fn(data)
    return True


def _equals(args: list[Node], cx: CompileContext) -> Node:
    """``==`` with a fast path for a constant string or number on one side."""
    padded = args + [const(None)] * (2 - len(args))
    (fa, a), (fb, b) = padded[0], padded[1]
    if not [1 for _fn, value in padded[2:] if value is VARIES]:
        if a is VARIES and b is not VARIES:
            fa, a, fb, b = fb, b, fa, a  # equality is symmetric in the reference
        if a is not VARIES and b is VARIES and type(a) in (str, int, float):
            constant, constant_type, loose = a, type(a), c.loose_equals

            def equals_constant(data: Any) -> bool:
                value = fb(data)
                if type(value) is constant_type:
                    return bool(value == constant)
                return loose(value, constant)

            return equals_constant, VARIES
    return binary(c.loose_equals)(args, cx)


def _ordering(two: Callable[[Any, Any], bool]) -> OperationCompiler:
    """<, <=, >, >=: two arguments, or three for the between form ``a op b op c``."""

    def between(values: list[Any]) -> bool:
        a, b, third = _arg(values, 0), _arg(values, 1), _arg(values, 2)
        if third is None:
            return two(a, b)
        return two(a, b) and two(b, third)

    def build(args: list[Node], cx: CompileContext) -> Node:
        if len(args) <= 2:
            return binary(two)(args, cx)
        return eager(between)(args, cx)

    return build


def _minus(values: list[Any]) -> int | float:
    a, b = _arg(values, 0), _arg(values, 1)
    return -c.to_number(a) if b is None else c.to_number(a) - c.to_number(b)


def _sum(values: list[Any]) -> int | float:
    total: int | float = 0
    for value in values:
        total += c.to_number(value)
    return total


def _product(values: list[Any]) -> int | float:
    total: int | float = 1
    for value in values:
        total *= c.to_number(value)
    return total


def _log(values: list[Any]) -> Any:
    value = _arg(values, 0)
    sys.stdout.write(json.dumps(value) + "\n")
    return value


def _missing(args: list[Node], cx: CompileContext) -> Node:
    fns = [fn for fn, _value in args]
    if not cx.root:
        return (lambda data: c.missing(data, [fn(data) for fn in fns])), VARIES
    cx.uses_now = True
    root_dict = cx.root_dict
    return (lambda root: c.missing(root_dict(root), [fn(root) for fn in fns])), VARIES


def _missing_some(args: list[Node], cx: CompileContext) -> Node:
    fns = [fn for fn, _value in args]

    def data_of(data: Any) -> Any:
        return cx.root_dict(data) if cx.root else data

    if cx.root:
        cx.uses_now = True

    def missing_some(data: Any) -> Any:
        values = [fn(data) for fn in fns]
        return c.missing_some(data_of(data), _arg(values, 0) if values else 0, _arg(values, 1))

    return missing_some, VARIES


def _minmax(pick: Callable[..., Any]) -> Callable[[list[Any]], Any]:
    return lambda values: pick(c.to_number(v) for v in values) if values else c.NAN


JSONLOGIC_OPERATIONS: dict[str, OperationCompiler] = {
    "==": _equals,
    "!=": binary(lambda a, b: not c.loose_equals(a, b)),
    "===": binary(lambda a, b: a == b),
    "!==": binary(lambda a, b: a != b),
    "<": _ordering(c.less),
    "<=": _ordering(c.less_or_equal),
    ">": _ordering(c.greater),
    ">=": _ordering(c.greater_or_equal),
    "!": eager(lambda values: not c.truthy(_arg(values, 0))),
    "!!": eager(lambda values: c.truthy(_arg(values, 0))),
    "+": eager(_sum),
    "*": eager(_product),
    "-": eager(_minus),
    "/": eager(lambda values: c.to_number(_arg(values, 0)) / c.to_number(_arg(values, 1))),
    "%": eager(lambda values: c.to_number(_arg(values, 0)) % c.to_number(_arg(values, 1))),
    "in": binary(c.contains),
    "min": eager(_minmax(min)),
    "max": eager(_minmax(max)),
    "cat": eager(lambda values: "".join(c.to_string(v) for v in values)),
    "substr": eager(lambda values: c.substring(_arg(values, 0), _arg(values, 1), _arg(values, 2))),
    "merge": eager(c.merge),
    "log": eager(_log, pure=False),
    "missing": _missing,
    "missing_some": _missing_some,
}
"""The JsonLogic operations flagd's Python evaluator knows (``var`` and the lazy ones aside)."""
