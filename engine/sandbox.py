"""The sandbox that runs a diagram's expressions and scripts.

RestrictedPython compiles the code under a tightened policy (refusals raise ``UnsafeCode``); it then runs
with safe builtins only, guarded attribute/item/write hooks, size checks on ``*``, ``**`` and ``<<`` and a
step and time budget counted by a trace function (failures raise ``ScriptFailed``).

The engine runs scripts, and expressions that could call or build anything, in a worker process with a hard
deadline and a memory cap (``engine.isolation``); an expression that only reads, compares and combines
names and constants (``decision == 'release'``, ``'PT24H'``) runs here, at the cost of the data it reads.
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
import traceback
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from RestrictedPython import compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence, safer_getattr_raise
from RestrictedPython.PrintCollector import PrintCollector
from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment

from engine.errors import ScriptFailed, ServiceCallFailed, UnsafeCode
from engine.values import DEFAULT_LIMITS, ValueLimits

_FILENAME = "<sandbox>"
MAX_ITEMS = 1_000_000  # longest str/bytes/list/tuple that ``*`` may build, longest ``range``
MAX_INT_BITS = 100_000  # largest int that ``*``, ``**`` or ``<<`` may build
MEMORY_LIMIT_MB = 256  # address space a script's worker process may add
# Expressions built only of these can neither call nor build anything larger than what they read.
_READ_ONLY_NODES = (
    ast.Expression,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Compare,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Is,
    ast.IsNot,
    ast.In,
    ast.NotIn,
    ast.IfExp,
    ast.Subscript,
    ast.Tuple,
    ast.List,
)

SAFE_BUILTINS = (
    "abs",
    "all",
    "any",
    "bool",
    "chr",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "frozenset",
    "int",
    "isinstance",
    "len",
    "list",
    "map",
    "max",
    "min",
    "ord",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
    "ArithmeticError",
    "AssertionError",
    "Exception",
    "IndexError",
    "KeyError",
    "LookupError",
    "NameError",
    "RuntimeError",
    "TypeError",
    "ValueError",
    "ZeroDivisionError",
)
SAFE_GLOBALS = {name: getattr(_dt, name) for name in ("datetime", "date", "timedelta", "timezone")}
# Refused wherever they appear: never task data, never available.
_REFUSED_NAMES = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "getattr",
        "setattr",
        "delattr",
        "hasattr",
        "globals",
        "locals",
        "vars",
        "dir",
        "breakpoint",
        "memoryview",
        "super",
        "classmethod",
        "staticmethod",
    }
)
# Refused when called: the builtins are unavailable, but these may be ordinary task-data variable names.
_REFUSED_CALLS = frozenset({"open", "type", "input", "help", "exit", "quit", "object", "id", "property"})
_REFUSED_ATTRIBUTES = frozenset({"mro", "format", "format_map"})  # besides RestrictedPython's own
_GUARDED_OPS = {ast.Mult: "*", ast.Pow: "**", ast.LShift: "<<"}
_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": operator.mul, "**": operator.pow, "<<": operator.lshift}
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    f"{op}=": getattr(operator, f"i{name}")
    for op, name in (
        ("+", "add"),
        ("-", "sub"),
        ("*", "mul"),
        ("/", "truediv"),
        ("//", "floordiv"),
        ("%", "mod"),
        ("**", "pow"),
        ("<<", "lshift"),
        (">>", "rshift"),
        ("&", "and"),
        ("|", "or"),
        ("^", "xor"),
        ("@", "matmul"),
    )
}
_LINE = re.compile(r"^Line (\d+): ")
# Imported by datetime's C code (date.today, strftime, strptime) through the frame's builtins; sandboxed
# code itself can never name __import__.
_INTERNAL_IMPORTS = frozenset({"time", "_strptime"})


class UnsafeSyntax(UnsafeCode, SyntaxError):
    """Source that does not parse; also a ``SyntaxError`` because SpiffWorkflow's DMN code expects one."""


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy, tightened: the refusals below come on top of its own."""

    def _refuse(self, node: ast.AST, what: str | None = None) -> None:
        self.error(node, f"{what or type(node).__name__ + ' statements are'} not allowed in the sandbox")

    # try and with are refused so that no handler, finally or __exit__ runs while the budget's exception
    # unwinds (the tracer is off by then); classes are not needed and would need __metaclass__.
    visit_Import = visit_ImportFrom = visit_ClassDef = visit_With = _refuse

    def visit_Try(self, node: ast.Try) -> Any:
        """Only the default guard: ``try: name`` / ``except NameError: name = constant`` (a variable a diagram
        may not have set yet, for instance in a therapy moved from an older version). Its body reads one name
        and its handler catches only NameError, so nothing runs while another exception unwinds."""
        if _is_default_guard(node):
            return self.node_contents_visit(node)
        return self._refuse(node, "Try statements (other than 'try: name' / 'except NameError: name = default') are")

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
        """Route ``*``, ``**`` and ``<<`` through ``_binop_`` so that huge results are refused."""
        node = self.node_contents_visit(node)
        symbol = _GUARDED_OPS.get(type(node.op))
        if symbol is None:
            return node
        call = ast.Call(ast.Name("_binop_", ast.Load()), [ast.Constant(symbol), node.left, node.right], [])
        for new in (call, call.func, call.args[0]):
            copy_locations(new, node)
        return call


def _is_default_guard(node: ast.Try) -> bool:
    """``try: x`` / ``except NameError: x = <constant>`` and nothing else (no else, no finally)."""
    if node.orelse or node.finalbody or len(node.body) != 1 or len(node.handlers) != 1:
        return False
    body, handler = node.body[0], node.handlers[0]
    if not (isinstance(body, ast.Expr) and isinstance(body.value, ast.Name)):
        return False
    if not (isinstance(handler.type, ast.Name) and handler.type.id == "NameError" and handler.name is None):
        return False
    return len(handler.body) == 1 and _assigns_constant(handler.body[0], body.value.id)


def _assigns_constant(statement: ast.stmt, name: str) -> bool:
    """``name = <constant, or a list, tuple or dict of constants>``."""
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
        return False
    target = statement.targets[0]
    allowed = (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Load)
    return (
        isinstance(target, ast.Name)
        and target.id == name
        and all(isinstance(n, allowed) for n in ast.walk(statement.value))
    )


@functools.lru_cache(maxsize=2048)
def _compile(source: str, mode: str) -> CodeType:
    """Parse and compile once per source; raise UnsafeCode (UnsafeSyntax if it does not parse)."""
    try:
        tree = ast.parse(source, _FILENAME, mode)
    except SyntaxError as err:
        refused = UnsafeSyntax(f"syntax error: {err.msg}", line=err.lineno)
        refused.lineno = err.lineno
        raise refused from err
    compiler = compile_restricted_eval if mode == "eval" else compile_restricted_exec
    result = compiler(tree, _FILENAME, policy=_Policy)  # type: ignore[arg-type]
    if result.errors:
        match = _LINE.match(result.errors[0])
        raise UnsafeCode(
            _LINE.sub("", result.errors[0]),
            line=int(match.group(1)) if match else None,
            details={"errors": list(result.errors)},
        )
    assert result.code is not None
    return result.code


@functools.lru_cache(maxsize=2048)
def is_read_only(source: str) -> bool:
    """Whether an expression only reads and compares names and constants (no call, no operator that builds)."""
    try:
        tree = ast.parse(source.strip(), _FILENAME, "eval")
    except SyntaxError:
        return False
    return all(isinstance(node, _READ_ONLY_NODES) for node in ast.walk(tree))


def check_expression(source: str) -> None:
    """Refuse (UnsafeCode with ``.line`` when known) an expression the sandbox would not run."""
    _compile(source.strip(), "eval")


def check_script(source: str) -> None:
    """Refuse (UnsafeCode with ``.line`` when known) a script the sandbox would not run."""
    _compile(source, "exec")


def _check_size(op: str, left: Any, right: Any) -> None:
    """Raise ValueError when ``left op right`` would build a huge sequence or integer."""
    ints = isinstance(left, int) and isinstance(right, int)
    if op == "*":
        too_big = any(
            isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_ITEMS
            for seq, times in ((left, right), (right, left))
        )
        too_big = too_big or (ints and left.bit_length() + right.bit_length() > MAX_INT_BITS)
    elif op == "**":
        too_big = ints and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS
    else:
        too_big = ints and left.bit_length() + right > MAX_INT_BITS
    if too_big:
        raise ValueError(f"the result of '{op}' would be too large for the sandbox")


def _binop(op: str, left: Any, right: Any) -> Any:
    _check_size(op, left, right)
    return _BINOPS[op](left, right)


def _inplacevar(op: str, left: Any, right: Any) -> Any:
    if op[:-1] in _BINOPS:
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


def _import(name: str, *args: Any, **kwargs: Any) -> Any:
    if name not in _INTERNAL_IMPORTS:
        raise ImportError(f"importing {name!r} is not allowed in the sandbox")
    return __import__(name, *args, **kwargs)


def _range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_ITEMS:
        raise ValueError(f"range() is limited to {MAX_ITEMS} items in the sandbox")
    return result


_HOOKS: dict[str, Any] = {
    "_getattr_": _getattr,
    "_getitem_": operator.getitem,
    "_write_": _write,
    "_getiter_": iter,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_inplacevar_": _inplacevar,
    "_binop_": _binop,
    "_print_": PrintCollector,
    "__import__": _import,
    "_apply_": lambda func, *args, **kwargs: func(*args, **kwargs),
}


class _BudgetExceeded(BaseException):
    """Raised into sandboxed frames by the tracer; not an Exception, and the sandbox has no bare except."""


class _Budget:
    """Counts line and call events of sandboxed frames against a step and time budget.

    The time is the CPU time of the running thread: a script is held to what it runs, not to the time a busy
    machine keeps it waiting.
    """

    def __init__(self, time_limit: float, max_steps: int):
        self.time_limit, self.max_steps, self.steps_left = time_limit, max_steps, max_steps
        self.deadline = time.thread_time() + time_limit

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self.count(frame, event, arg) if frame.f_code.co_filename == _FILENAME else None

    def count(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event in ("line", "call"):
            self.steps_left -= 1
            if self.steps_left < 0:
                raise _BudgetExceeded(f"stopped after {self.max_steps} steps")
            if time.thread_time() > self.deadline:
                raise _BudgetExceeded(f"stopped after the time limit of {self.time_limit:g} s")
        return self.count


def _is_private(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("_")


class SandboxEnvironment(BasePythonScriptEngineEnvironment):
    """A SpiffWorkflow script environment running code in the sandbox, with TaskDataEnvironment semantics."""

    def __init__(self, *, time_limit: float = 1.0, max_steps: int = 100_000, extra_globals: dict | None = None):
        super().__init__(dict(extra_globals or {}))
        self.time_limit, self.max_steps = time_limit, max_steps
        safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
        # Everything lives in __builtins__: task data may shadow it, and it never lands in task data.
        self.builtins = {**safe, "range": _range, **SAFE_GLOBALS, **self.globals, **_HOOKS}

    def evaluate(self, expression: str, context: dict, external_context: dict | None = None) -> Any:
        """Return the value of ``expression`` with the task data (and external context) as globals."""
        what = f"expression {expression!r}"
        code = self._code(expression.strip(), "eval", what)
        namespace = {k: v for k, v in {**(external_context or {}), **context}.items() if not _is_private(k)}
        return self._run(code, {**namespace, "__builtins__": self.builtins}, what)

    def execute(self, script: str, context: dict, external_context: dict | None = None) -> bool:
        """Run ``script`` on the task data in ``context``: assigned variables stay, injected names do not."""
        code = self._code(script, "exec", "script")
        external = {k: v for k, v in (external_context or {}).items() if not _is_private(k)}
        if clash := set(external).intersection(context):
            raise ScriptFailed(f"task data overwrites predefined names: {sorted(clash)}")
        hidden = {k: context.pop(k) for k in list(context) if _is_private(k)}
        context.update(external, __builtins__=self.builtins)
        try:
            self._run(code, context, "script")
        finally:
            for key in [k for k, v in context.items() if _is_private(k) or k in external or callable(v)]:
                del context[key]
            context.update(hidden)
        return True

    def call_service(self, context: dict, **kwargs: Any) -> Any:
        """Not used: SandboxScriptEngine.call_service calls services."""
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
            # The code was compiled by RestrictedPython under _Policy and sees only the sandbox's builtins.
            # eval also runs code compiled in "exec" mode (and then returns None).
            return eval(code, namespace)  # noqa: S307
        except (Exception, _BudgetExceeded) as err:
            if isinstance(err, _BudgetExceeded):
                detail = str(err)
            elif isinstance(err, MemoryError):
                detail = "ran out of memory: it tried to build a value larger than its memory limit"
            else:
                detail = f"failed: {type(err).__name__}: {err}"
            lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == _FILENAME]
            raise ScriptFailed(f"{what} {detail}", line=lines[-1] if lines else None) from err
        finally:
            sys.settrace(previous)


class IsolatedSandboxEnvironment(SandboxEnvironment):
    """The sandbox with scripts and non-trivial expressions run in a worker process (``engine.isolation``).

    A script may not change the ``protected_keys`` of the task data, and what it leaves must pass
    ``data_limits``.
    """

    def __init__(
        self,
        *,
        time_limit: float = 1.0,
        max_steps: int = 100_000,
        memory_limit_mb: int = MEMORY_LIMIT_MB,
        data_limits: ValueLimits = DEFAULT_LIMITS,
        protected_keys: tuple[str, ...] = (),
    ):
        super().__init__(time_limit=time_limit, max_steps=max_steps)
        self.memory_limit_mb, self.data_limits = memory_limit_mb, data_limits
        self.protected_keys = tuple(protected_keys)

    def evaluate(self, expression: str, context: dict, external_context: dict | None = None) -> Any:
        """The value of ``expression``: here when it only reads and compares, else in a worker."""
        if is_read_only(expression):
            return super().evaluate(expression, context, external_context)
        what = f"expression {expression.strip()!r}"
        self._code(expression.strip(), "eval", what)  # refusals are reported the same way in both places
        return self._isolated("eval", expression, context, external_context, what)

    def execute(self, script: str, context: dict, external_context: dict | None = None) -> bool:
        """Run ``script`` in a worker on the task data in ``context``, which takes what the script leaves."""
        self._code(script, "exec", "script")
        hidden = {k: context[k] for k in context if _is_private(k)}
        public = {k: v for k, v in context.items() if not _is_private(k)}
        result = self._isolated("exec", script, public, external_context, "script")
        if changed := sorted(k for k in self.protected_keys if k in public and result.get(k) != public[k]):
            raise ScriptFailed(f"script may not change {', '.join(changed)}: set by the server")
        context.clear()
        context.update(result, **hidden)
        return True

    def _isolated(self, mode: str, source: str, context: dict, external: dict | None, what: str) -> Any:
        from .isolation import run

        return run(
            mode,
            source,
            context,
            {k: v for k, v in (external or {}).items() if not _is_private(k)},
            time_limit=self.time_limit,
            max_steps=self.max_steps,
            memory_limit_mb=self.memory_limit_mb,
            limits=self.data_limits,
            what=what,
        )


class SandboxScriptEngine(PythonScriptEngine):
    """SpiffWorkflow script engine running every expression and script in the sandbox.

    With ``isolate`` (the default) scripts and non-trivial expressions run in a worker process with a hard
    deadline and ``memory_limit_mb``; without it everything runs in this process under the step and time
    budget only (for checks that must not start processes).
    """

    def __init__(
        self,
        *,
        service_caller: Callable[[str, dict, dict], Any] | None = None,
        time_limit: float = 1.0,
        max_steps: int = 100_000,
        isolate: bool = True,
        memory_limit_mb: int | None = None,
        data_limits: ValueLimits = DEFAULT_LIMITS,
        protected_keys: tuple[str, ...] = (),
    ):
        environment = (
            IsolatedSandboxEnvironment(
                time_limit=time_limit,
                max_steps=max_steps,
                memory_limit_mb=memory_limit_mb or MEMORY_LIMIT_MB,
                data_limits=data_limits,
                protected_keys=protected_keys,
            )
            if isolate
            else SandboxEnvironment(time_limit=time_limit, max_steps=max_steps)
        )
        super().__init__(environment=environment)
        self.service_caller = service_caller

    def validate(self, expression: str) -> None:
        """Refuse an expression the sandbox would not run (UnsafeCode)."""
        check_expression(expression)

    def evaluate(self, task: Any, expression: str, external_context: dict | None = None) -> Any:
        """Evaluate ``expression`` on the task's data; failures raise ScriptFailed naming the element."""
        try:
            return self.environment.evaluate(expression, task.data, external_context)
        except ScriptFailed as err:
            err.element_id = err.element_id or _element_id(task)
            raise

    def execute(self, task: Any, script: str, external_context: dict | None = None) -> bool:
        """Run ``script`` on the task's data; failures raise ScriptFailed naming the element."""
        try:
            return self.environment.execute(script, task.data, external_context)
        except ScriptFailed as err:
            err.element_id = err.element_id or _element_id(task)
            raise

    def call_service(self, task: Any, operation_name: str, operation_params: dict, **kwargs: Any) -> str:
        """Call ``service_caller(name, params, copy of task data)`` and return its result as JSON text."""
        element_id = _element_id(task)
        if self.service_caller is None:
            raise ServiceCallFailed(f"{operation_name} failed: no service caller", element_id=element_id)
        params = {name: param["value"] for name, param in operation_params.items()}
        try:
            result = self.service_caller(operation_name, params, copy.deepcopy(task.data))
        except Exception as err:
            raise ServiceCallFailed(f"{operation_name} failed: {err}", element_id=element_id) from err
        try:
            return json.dumps(result)
        except (TypeError, ValueError) as err:
            raise ServiceCallFailed(
                f"{operation_name} returned a result that is not JSON: {err}", element_id=element_id
            ) from err


def _element_id(task: Any) -> str | None:
    return getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name
