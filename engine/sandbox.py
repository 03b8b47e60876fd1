"""The sandbox that runs a diagram's expressions and scripts.

Code is compiled with RestrictedPython under a tightened policy (no imports, classes, ``try``/``with``,
underscore names or dangerous builtins) and run with a small set of safe builtins, guarded attribute,
item, write and iteration hooks, size checks on ``*``, ``**`` and ``<<``, and a per-line step and time
budget counted by a trace function. Refusals found while compiling raise ``UnsafeCode``; anything that
fails while running raises ``ScriptFailed``.
"""

from __future__ import annotations

import ast
import builtins
import copy
import datetime as _dt
import functools
import json
import operator
import re
import sys
import time
from collections.abc import Callable
from types import CodeType, FrameType, TracebackType
from typing import Any

from RestrictedPython import (
    PrintCollector,
    RestrictingNodeTransformer,
    compile_restricted_eval,
    compile_restricted_exec,
)
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence, safer_getattr_raise
from RestrictedPython.transformer import copy_locations
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment

from engine.errors import ScriptFailed, ServiceCallFailed, UnsafeCode

_FILENAME = "<sandbox>"
MAX_ITEMS = 1_000_000  # longest str/list/tuple/range that ``*`` or ``range`` may build
MAX_INT_BITS = 100_000  # largest int that ``*``, ``**`` or ``<<`` may build

_SAFE_BUILTIN_NAMES = (
    "abs", "all", "any", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "frozenset",
    "int", "isinstance", "len", "list", "map", "max", "min", "ord", "repr", "reversed", "round", "set",
    "slice", "sorted", "str", "sum", "tuple", "zip",
    "ArithmeticError", "AssertionError", "Exception", "IndexError", "KeyError", "LookupError",
    "RuntimeError", "TypeError", "ValueError", "ZeroDivisionError",
)
SAFE_GLOBALS: dict[str, Any] = {
    "datetime": _dt.datetime, "date": _dt.date, "timedelta": _dt.timedelta, "timezone": _dt.timezone,
}
# Refused wherever they appear: they are never task data and never available.
_REFUSED_NAMES = frozenset({
    "exec", "eval", "compile", "getattr", "setattr", "delattr", "hasattr", "globals", "locals", "vars",
    "dir", "breakpoint", "memoryview", "super", "classmethod", "staticmethod",
})
# Refused when called: the builtins are unavailable, but the names may be ordinary task-data variables.
_REFUSED_CALLS = frozenset({"open", "type", "input", "help", "exit", "quit", "object", "id", "property"})
_REFUSED_ATTRIBUTES = frozenset({"mro", "format", "format_map"})
_GUARDED_OPS: dict[type[ast.operator], str] = {ast.Mult: "*", ast.Pow: "**", ast.LShift: "<<"}
_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": operator.mul, "**": operator.pow, "<<": operator.lshift}
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "@=": operator.imatmul,
}
_LINE = re.compile(r"^Line (\d+): ")


class UnsafeSyntax(UnsafeCode, SyntaxError):
    """Source that does not parse; also a ``SyntaxError`` because SpiffWorkflow's DMN code expects one."""


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy, tightened: the refusals below come on top of its own."""

    def _refuse(self, node: ast.AST, what: str) -> None:
        self.error(node, f"{what} not allowed in the sandbox")

    def visit_Import(self, node: ast.AST) -> None:
        self._refuse(node, "imports are")

    visit_ImportFrom = visit_Import

    def visit_ClassDef(self, node: ast.AST) -> None:
        self._refuse(node, "class definitions are")

    def visit_Try(self, node: ast.AST) -> None:
        # Nothing may catch the budget's exception or run code (except/finally) while it unwinds.
        self._refuse(node, "try statements are")

    def visit_With(self, node: ast.AST) -> None:
        self._refuse(node, "with statements are")

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in _REFUSED_NAMES:
            self._refuse(node, f'"{node.id}" is')
        return super().visit_Name(node)

    def visit_Call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Name) and node.func.id in _REFUSED_CALLS:
            self._refuse(node, f'calling "{node.func.id}" is')
        return super().visit_Call(node)

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        if node.attr in _REFUSED_ATTRIBUTES:
            self._refuse(node, f'attribute "{node.attr}" is')
        return super().visit_Attribute(node)

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        """Route ``*``, ``**`` and ``<<`` through ``_binop_`` so huge results are refused."""
        node = self.node_contents_visit(node)
        symbol = _GUARDED_OPS.get(type(node.op))
        if symbol is None:
            return node
        call = ast.Call(func=ast.Name("_binop_", ast.Load()),
                        args=[ast.Constant(symbol), node.left, node.right], keywords=[])
        for new in (call, call.func, call.args[0]):
            copy_locations(new, node)
        return call


@functools.lru_cache(maxsize=2048)
def _compile(source: str, mode: str) -> CodeType:
    """Parse and compile once per source; raise UnsafeCode (UnsafeSyntax) when refused."""
    if not isinstance(source, str):
        raise UnsafeCode(f"expected source text, got {type(source).__name__}")
    try:
        tree = ast.parse(source, _FILENAME, mode)
    except SyntaxError as err:
        raised = UnsafeSyntax(f"syntax error: {err.msg}", line=err.lineno)
        raised.lineno = err.lineno
        raise raised from err
    compiler = compile_restricted_eval if mode == "eval" else compile_restricted_exec
    result = compiler(tree, _FILENAME, policy=_Policy)
    if result.errors:
        match = _LINE.match(result.errors[0])
        message = _LINE.sub("", result.errors[0])
        raise UnsafeCode(message, line=int(match.group(1)) if match else None,
                         details={"errors": list(result.errors)})
    return result.code


def check_expression(source: str) -> None:
    """Refuse (UnsafeCode with ``.line`` when known) an expression the sandbox would not run."""
    _compile(source.strip() if isinstance(source, str) else source, "eval")


def check_script(source: str) -> None:
    """Refuse (UnsafeCode with ``.line`` when known) a script the sandbox would not run."""
    _compile(source, "exec")


def _check_size(op: str, left: Any, right: Any) -> None:
    """Raise ValueError when ``left op right`` would build a huge sequence or integer."""
    too_big = False
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
                too_big = too_big or len(seq) * times > MAX_ITEMS
        if isinstance(left, int) and isinstance(right, int):
            too_big = left.bit_length() + right.bit_length() > MAX_INT_BITS
    elif isinstance(left, int) and isinstance(right, int) and right > 0:
        if op == "**" and abs(left) > 1:
            too_big = left.bit_length() * right > MAX_INT_BITS
        elif op == "<<":
            too_big = left.bit_length() + right > MAX_INT_BITS
    if too_big:
        raise ValueError(f"the result of '{op}' would be too large for the sandbox")


def _binop(op: str, left: Any, right: Any) -> Any:
    _check_size(op, left, right)
    return _BINOPS[op](left, right)


def _inplacevar(op: str, left: Any, right: Any) -> Any:
    _check_size(op[:-1], left, right)
    return _INPLACE[op](left, right)


def _getattr(obj: Any, name: str) -> Any:
    if not isinstance(name, str) or name.startswith("_") or name in _REFUSED_ATTRIBUTES:
        raise AttributeError(f"attribute {name!r} is not allowed in the sandbox")
    return safer_getattr_raise(obj, name)


def _write(obj: Any) -> Any:
    if type(obj) not in (dict, list):
        raise TypeError(f"{type(obj).__name__} objects cannot be modified in the sandbox")
    return obj


def _range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_ITEMS:
        raise ValueError(f"range() is limited to {MAX_ITEMS} items in the sandbox")
    return result


_HOOKS: dict[str, Any] = {
    "_getattr_": _getattr, "_getitem_": operator.getitem, "_write_": _write, "_getiter_": iter,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence, "_unpack_sequence_": guarded_unpack_sequence,
    "_inplacevar_": _inplacevar, "_binop_": _binop, "_print_": PrintCollector,
    "_apply_": lambda func, *args, **kwargs: func(*args, **kwargs),
}


class _BudgetExceeded(BaseException):
    """Raised into sandboxed frames by the tracer; not an Exception, so sandboxed code cannot catch it."""


class _Budget:
    """Counts line and call events of sandboxed frames against a step and time budget."""

    def __init__(self, time_limit: float, max_steps: int):
        self.time_limit, self.steps_left = time_limit, max_steps
        self.deadline = time.monotonic() + time_limit
        self.max_steps = max_steps

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != _FILENAME:
            return None
        return self.count(frame, event, arg)

    def count(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event in ("line", "call"):
            self.steps_left -= 1
            if self.steps_left < 0:
                raise _BudgetExceeded(f"stopped after {self.max_steps} steps")
            if time.monotonic() > self.deadline:
                raise _BudgetExceeded(f"stopped after the time limit of {self.time_limit:g} s")
        return self.count


def _sandbox_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _is_private(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("_")


class SandboxEnvironment(BasePythonScriptEngineEnvironment):
    """A SpiffWorkflow script environment that runs code under the sandbox, with task data semantics."""

    def __init__(self, *, time_limit: float = 1.0, max_steps: int = 100_000,
                 extra_globals: dict | None = None):
        super().__init__(dict(extra_globals or {}))
        self.time_limit, self.max_steps = time_limit, max_steps
        safe = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
        # Everything lives in __builtins__: task data may shadow it and it never lands in task data.
        self.builtins = {**safe, "range": _range, **SAFE_GLOBALS, **self.globals, **_HOOKS}

    def evaluate(self, expression: str, context: dict, external_context: dict | None = None) -> Any:
        """Return the value of ``expression`` with the task data (and external context) as globals."""
        what = f"expression {expression!r}"
        code = self._code(expression.strip() if isinstance(expression, str) else expression, "eval", what)
        namespace = {k: v for k, v in {**(external_context or {}), **context}.items() if not _is_private(k)}
        namespace["__builtins__"] = self.builtins
        return self._run(code, namespace, what)

    def execute(self, script: str, context: dict, external_context: dict | None = None) -> bool:
        """Run ``script`` against the task data in ``context``; assigned variables stay in it."""
        code = self._code(script, "exec", "script")
        external = {k: v for k, v in (external_context or {}).items() if not _is_private(k)}
        clash = set(external).intersection(context)
        if clash:
            raise ScriptFailed(f"task data overwrites predefined names: {sorted(clash)}")
        hidden = {k: context.pop(k) for k in list(context) if _is_private(k)}
        context.update(external, __builtins__=self.builtins)
        try:
            self._run(code, context, "script")
        finally:
            for key in list(context):
                if _is_private(key) or key in external or callable(context[key]):
                    del context[key]
            context.update(hidden)
        return True

    def call_service(self, context: dict, **kwargs: Any) -> Any:
        """Services are called by SandboxScriptEngine.call_service, not by the environment."""
        raise NotImplementedError("SandboxScriptEngine.call_service calls services")

    @staticmethod
    def _code(source: str, mode: str, what: str) -> CodeType:
        try:
            return _compile(source, mode)
        except UnsafeCode as err:
            raise ScriptFailed(f"{what} refused: {err.message}", line=err.line) from err

    def _run(self, code: CodeType, namespace: dict, what: str) -> Any:
        budget = _Budget(self.time_limit, self.max_steps)
        previous = sys.gettrace()
        sys.settrace(budget.trace)
        try:
            # The code object was compiled by RestrictedPython under _Policy and runs with the sandbox's
            # builtins only; eval also runs code compiled in "exec" mode (and then returns None).
            return eval(code, namespace)  # noqa: S307
        except (Exception, _BudgetExceeded) as err:
            detail = str(err) if isinstance(err, _BudgetExceeded) else f"failed: {type(err).__name__}: {err}"
            raise ScriptFailed(f"{what} {detail}", line=_sandbox_line(err.__traceback__)) from err
        finally:
            sys.settrace(previous)


class SandboxScriptEngine(PythonScriptEngine):
    """SpiffWorkflow script engine running every expression and script in the sandbox."""

    def __init__(self, *, service_caller: Callable[[str, dict, dict], Any] | None = None,
                 time_limit: float = 1.0, max_steps: int = 100_000):
        super().__init__(environment=SandboxEnvironment(time_limit=time_limit, max_steps=max_steps))
        self.service_caller = service_caller

    def validate(self, expression: str) -> None:
        """Refuse an expression the sandbox would not run (UnsafeCode)."""
        check_expression(expression)

    def evaluate(self, task: Any, expression: str, external_context: dict | None = None) -> Any:
        """Evaluate ``expression`` against the task's data; failures raise ScriptFailed naming the element."""
        try:
            return self.environment.evaluate(expression, task.data if task is not None else {}, external_context)
        except ScriptFailed as err:
            err.element_id = err.element_id or _element_id(task)
            raise

    def execute(self, task: Any, script: str, external_context: dict | None = None) -> bool:
        """Run ``script`` against the task's data; failures raise ScriptFailed naming the element."""
        try:
            return self.environment.execute(script, task.data, external_context)
        except ScriptFailed as err:
            err.element_id = err.element_id or _element_id(task)
            raise

    def call_service(self, task: Any, operation_name: str, operation_params: dict, **kwargs: Any) -> str:
        """Call ``service_caller(name, params, copy of task data)`` and return its result as JSON text."""
        element_id = _element_id(task)
        if self.service_caller is None:
            raise ServiceCallFailed(f"{operation_name} failed: no service caller configured",
                                    element_id=element_id)
        params = {name: param["value"] for name, param in operation_params.items()}
        try:
            result = self.service_caller(operation_name, params, copy.deepcopy(task.data))
        except Exception as err:
            raise ServiceCallFailed(f"{operation_name} failed: {err}", element_id=element_id) from err
        try:
            return json.dumps(result)
        except (TypeError, ValueError) as err:
            raise ServiceCallFailed(f"{operation_name} returned a result that is not JSON: {err}",
                                    element_id=element_id) from err


def _element_id(task: Any) -> str | None:
    spec = getattr(task, "task_spec", None)
    return getattr(spec, "bpmn_id", None) or getattr(spec, "name", None)
