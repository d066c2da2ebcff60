"""Arithmetic by walking a syntax tree: the calculator's parser. Never ``eval``.

Shared by the legacy text tool (``agents._tools.Calculator``) and the typed ``calculator`` tool.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from protocols import AgentError

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_MAX_EXPRESSION = 200
_MAX_EXPONENT = 64
_MAX_MAGNITUDE = 1e15


def calculate(expression: str) -> float:
    """Computes an arithmetic expression by walking its syntax tree.

    Raises:
        AgentError: saying what is not allowed (names, calls, huge powers, division by zero).
    """
    text = _normalise(expression)
    if not text:
        raise AgentError("calculator needs an expression such as '2 * (3 + 4)'", code="bad_input")
    if len(text) > _MAX_EXPRESSION:
        raise AgentError(
            f"expression is {len(text)} characters; the limit is {_MAX_EXPRESSION}",
            code="bad_input",
        )
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise AgentError(
            f"not an arithmetic expression: {expression!r}; use numbers and + - * / ( )",
            code="bad_input",
        ) from None
    return _walk(tree.body, source=expression)


def _normalise(expression: str) -> str:
    text = expression.strip().replace("\u00d7", "*").replace("\u00f7", "/").replace("^", "**")
    text = text.replace(",", "")  # thousands separators: 1,000 -> 1000
    return text.rstrip("=? ").strip()


def _walk(node: ast.expr, *, source: str) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise AgentError(f"{source!r}: True/False are not numbers", code="bad_input")
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand, source=source))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left, source=source), _walk(node.right, source=source)
        return _apply(type(node.op), left, right)
    raise AgentError(
        f"calculator accepts numbers and + - * / // % ** ( ) only; {source!r} has "
        f"{type(node).__name__}",
        code="bad_input",
    )


def _apply(op: type[ast.operator], left: float, right: float) -> float:
    if op is ast.Pow and abs(right) > _MAX_EXPONENT:
        raise AgentError(f"exponent {right:g} is above the limit {_MAX_EXPONENT}", code="bad_input")
    try:
        value = _BINARY[op](left, right)
    except ZeroDivisionError:
        raise AgentError("division by zero", code="bad_input") from None
    if isinstance(value, complex) or not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
        raise AgentError("result is out of range", code="bad_input")
    return value


def format_number(value: float) -> str:
    """Integers without a decimal point; other numbers with up to 10 significant digits."""
    if value.is_integer():
        return str(int(value))
    return f"{value:.10g}"
