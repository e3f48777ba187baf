"""The hand-written stub python/dydnn/_C.pyi matches the built extension dydnn._C.

The stub is parsed with ``ast`` (never imported) and compared with the module in both
directions: its public classes and functions, each class's members (public names, the
``_``-prefixed helpers a class binds itself, and ``__init__`` where the class defines
one; pybind's inherited dunders are ignored), each member's kind (method, static method,
property, enum value), and, from pybind's signature docstrings, argument names,
keyword-or-positional-only-ness and defaults. A binding added, removed or renamed
without a stub update fails here.

Run: ``PYTHONPATH=python /usr/bin/python3 -m pytest tests/python/test_stubs.py -q``.
"""
from __future__ import annotations

import ast
import re
import types
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import dydnn  # noqa: F401  (loads torch before the extension)
from dydnn import _C

STUB_PATH = Path(_C.__file__).with_name("_C.pyi")

# Kinds of names and members, as both sides report them.
CLASS, FUNCTION, METHOD, STATIC, PROPERTY, VALUE = "class", "function", "method", "staticmethod", "property", "value"


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def _is_private_helper(name: str) -> bool:
    """`_named_parameters` and friends: bound on purpose (python/dydnn/nn.py calls them)."""
    return name.startswith("_") and not name.startswith("__")


# --- the stub side ---------------------------------------------------------------------------


def _decorators(node: ast.FunctionDef) -> List[str]:
    return [d.id if isinstance(d, ast.Name) else ast.unparse(d) for d in node.decorator_list]


def _member_kind(node: ast.stmt) -> Optional[str]:
    if isinstance(node, ast.FunctionDef):
        decorators = _decorators(node)
        if "staticmethod" in decorators:
            return STATIC
        if "property" in decorators:
            return PROPERTY
        return METHOD
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return VALUE
    return None


def _member_name(node: ast.stmt) -> Optional[str]:
    if isinstance(node, ast.FunctionDef):
        return node.name
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    return None


class Stub:
    """The parsed stub: top-level classes and functions, each class's members."""

    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.top: Dict[str, Tuple[str, ast.stmt]] = {}
        self.members: Dict[str, Dict[str, Tuple[str, ast.stmt]]] = {}
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                self.top[node.name] = (CLASS, node)
                members = {}
                for item in node.body:
                    name, kind = _member_name(item), _member_kind(item)
                    if name is not None and kind is not None:
                        members[name] = (kind, item)
                self.members[node.name] = members
            elif isinstance(node, ast.FunctionDef):
                self.top[node.name] = (FUNCTION, node)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                self.top[node.target.id] = (VALUE, node)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.top[target.id] = (VALUE, node)


def _load_stub() -> Stub:
    return Stub(ast.parse(STUB_PATH.read_text(), filename=str(STUB_PATH)))


# --- the runtime side ------------------------------------------------------------------------


def _runtime_top() -> Dict[str, str]:
    out = {}
    for name in dir(_C):
        if not _is_public(name):
            continue
        obj = getattr(_C, name)
        out[name] = CLASS if isinstance(obj, type) else FUNCTION if callable(obj) else VALUE
    return out


def _runtime_classes() -> List[str]:
    return sorted(name for name, kind in _runtime_top().items() if kind == CLASS)


def _runtime_member_kind(cls: type, name: str) -> str:
    raw = None
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            break
    if isinstance(raw, staticmethod):
        return STATIC
    if isinstance(raw, property):
        return PROPERTY
    if isinstance(raw, cls):  # a py::enum_ value
        return VALUE
    return METHOD


def _binds_init(cls: type) -> bool:
    """Whether the class binds a constructor (py::init); without one pybind installs a slot
    wrapper that raises "No constructor defined!"."""
    init = vars(cls).get("__init__")
    return init is not None and not isinstance(init, types.WrapperDescriptorType)


def _runtime_members(cls: type) -> Dict[str, str]:
    """Public members (own or inherited), `_x` helpers the class binds itself, and `__init__`
    where the class binds a constructor; pybind11_object's inherited dunders are left out."""
    names = {n for n in dir(cls) if _is_public(n)}
    names |= {n for n in vars(cls) if _is_private_helper(n) and callable(vars(cls)[n])}
    if _binds_init(cls):
        names.add("__init__")
    return {n: _runtime_member_kind(cls, n) for n in sorted(names)}


# --- pybind signatures -----------------------------------------------------------------------


def _split_top_level(text: str) -> List[str]:
    """Splits on commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _pybind_params(func, name: str) -> Optional[List[Tuple[str, Optional[str]]]]:
    """[(argument name, default text or None)] from pybind's signature docstring, including
    `self`; None where there is no single signature (an overloaded or non-pybind callable)."""
    doc = getattr(func, "__doc__", None) or ""
    first = doc.lstrip().split("\n", 1)[0]
    match = re.match(rf"^{re.escape(name)}\((.*)\) -> .*$", first)
    if match is None:
        return None
    params = []
    for part in _split_top_level(match.group(1)):
        arg, _, rest = part.partition(":")
        default = None
        _, eq, tail = rest.partition(" = ")
        if eq:
            default = tail.strip()
        params.append((arg.strip(), default))
    return params


def _literal(text_or_node):
    """(True, value) for a literal (pybind's default text or a stub expression), else (False, None)."""
    try:
        return True, ast.literal_eval(text_or_node)
    except (ValueError, SyntaxError, TypeError):
        return False, None


def _signature_problems(where: str, func, name: str, node: ast.FunctionDef, has_self: bool) -> List[str]:
    runtime = _pybind_params(func, name)
    if runtime is None:
        return []
    if has_self:
        runtime = runtime[1:]
    args = node.args
    problems = []
    # pybind shows py::kw_only() as a bare `*`; what follows must be keyword-only in the stub too.
    names = [n for n, _ in runtime]
    runtime_kwonly = runtime[names.index("*") + 1:] if "*" in names else []
    runtime = runtime[:names.index("*")] if "*" in names else runtime
    stub_kwonly = [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if [n for n, _ in runtime_kwonly] != [n for n, _ in stub_kwonly]:
        problems.append(f"{where}: keyword-only parameters: binding {[n for n, _ in runtime_kwonly]}, "
                        f"stub {[n for n, _ in stub_kwonly]}")
    for (rt_name, rt_default), (_, default) in zip(runtime_kwonly, stub_kwonly):
        if (default is None) != (rt_default is None):
            problems.append(f"{where}: `{rt_name}` default: binding {rt_default!r}, stub "
                            f"{None if default is None else ast.unparse(default)!r}")
    if args.vararg or args.kwarg:
        problems.append(f"{where}: the stub has *args/**kwargs parameters pybind does not")
    positional = [(a, True) for a in args.posonlyargs] + [(a, False) for a in args.args]
    if has_self:
        positional = positional[1:]
    defaults: List[Optional[ast.expr]] = [None] * (len(args.posonlyargs) + len(args.args) - len(args.defaults))
    defaults += list(args.defaults)
    if has_self:
        defaults = defaults[1:]
    if len(positional) != len(runtime):
        return [f"{where}: the stub has {len(positional)} parameters, the binding {len(runtime)} "
                f"({', '.join(n for n, _ in runtime)})"]
    for (arg, positional_only), default, (rt_name, rt_default) in zip(positional, defaults, runtime):
        unnamed = re.fullmatch(r"arg\d+", rt_name) is not None
        if unnamed and not positional_only:
            problems.append(f"{where}: {rt_name} has no py::arg name, so `{arg.arg}` must be positional-only (before `/`)")
        if not unnamed and (positional_only or arg.arg != rt_name):
            problems.append(f"{where}: parameter `{arg.arg}` should be `{rt_name}` (keyword-passable)")
        if (default is None) != (rt_default is None):
            problems.append(f"{where}: `{rt_name}` default: binding {rt_default!r}, stub "
                            f"{None if default is None else ast.unparse(default)!r}")
        elif default is not None and not (isinstance(default, ast.Constant) and default.value is Ellipsis):
            ok_rt, value_rt = _literal(rt_default)
            ok_stub, value_stub = _literal(default)
            if ok_rt and ok_stub and value_rt != value_stub:
                problems.append(f"{where}: `{rt_name}` defaults to {value_rt!r}, the stub says {value_stub!r}")
    return problems


# --- the comparisons (each returns a list of problems) ---------------------------------------


def module_problems(stub: Stub) -> List[str]:
    runtime = _runtime_top()
    stub_public = {n: kind for n, (kind, _) in stub.top.items() if _is_public(n)}
    problems = []
    for name, kind in runtime.items():
        if name not in stub_public:
            problems.append(f"dydnn._C.{name} ({kind}) is missing from _C.pyi")
        elif stub_public[name] != kind:
            problems.append(f"dydnn._C.{name} is a {kind}, the stub declares a {stub_public[name]}")
    for name in stub_public:
        if name not in runtime:
            problems.append(f"_C.pyi declares {name}, which dydnn._C does not have")
    for name, kind in runtime.items():
        if kind == FUNCTION and stub_public.get(name) == FUNCTION:
            problems += _signature_problems(f"_C.{name}", getattr(_C, name), name, stub.top[name][1], has_self=False)
    return problems


def class_problems(stub: Stub, class_name: str) -> List[str]:
    if class_name not in stub.members:
        return [f"class {class_name} is missing from _C.pyi"]
    cls = getattr(_C, class_name)
    runtime = _runtime_members(cls)
    declared = stub.members[class_name]
    checked = {n: v for n, v in declared.items() if _is_public(n) or _is_private_helper(n) or n == "__init__"}
    problems = []
    for name, kind in runtime.items():
        if name not in declared:
            problems.append(f"{class_name}.{name} ({kind}) is missing from _C.pyi")
        elif declared[name][0] != kind:
            problems.append(f"{class_name}.{name} is a {kind}, the stub declares a {declared[name][0]}")
    for name in checked:
        if name not in runtime:
            problems.append(f"_C.pyi declares {class_name}.{name}, which dydnn._C.{class_name} does not bind")
    # Every stubbed method is checked (dunders too) against pybind's signature, where it has one.
    for name, (kind, node) in declared.items():
        if kind in (METHOD, STATIC) and name in vars(cls) and isinstance(node, ast.FunctionDef):
            problems += _signature_problems(f"{class_name}.{name}", getattr(cls, name), name, node,
                                            has_self=kind == METHOD)
    return problems


def body_problems(stub: Stub) -> List[str]:
    """Stubs carry no bodies: every function is `...` and nothing else."""
    problems = []
    for node in ast.walk(stub.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if not (len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and body[0].value.value is Ellipsis):
                problems.append(f"{node.name} (line {node.lineno}) has a body other than `...`")
    return problems


# --- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub() -> Stub:
    return _load_stub()


def test_stub_and_marker_sit_beside_the_extension():
    assert STUB_PATH.is_file(), f"no stub at {STUB_PATH}"
    assert STUB_PATH.with_name("py.typed").is_file(), "python/dydnn/py.typed (PEP 561 marker) is missing"


def test_module_level_names_match(stub):
    assert module_problems(stub) == []


@pytest.mark.parametrize("class_name", _runtime_classes())
def test_class_members_match(stub, class_name):
    assert class_problems(stub, class_name) == []


def test_stub_has_no_bodies(stub):
    assert body_problems(stub) == []


def test_the_expected_surface_is_bound():
    """The classes and functions the stub was written for are all still there."""
    expected = {"Config", "GroupSpec", "Execution", "Connectivity", "NetSpec", "DynamicConv2d", "DynamicLinear",
                "DynamicBatchNorm2d", "DynamicNet", "execution_from_string", "retain_freed_memory"}
    assert expected <= set(_runtime_top())
    assert set(_C.Execution.__members__) == {"Auto", "Packed", "PerGroup"}


def _without(stub: Stub, class_name: Optional[str], member: str) -> Stub:
    """The stub with one top-level name (class_name None) or one class member removed."""
    tree = ast.parse(STUB_PATH.read_text())
    if class_name is None:
        tree.body = [n for n in tree.body if getattr(n, "name", None) != member]
    else:
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == class_name:
                node.body = [n for n in node.body if _member_name(n) != member] or [ast.Pass()]
    return Stub(tree)


@pytest.mark.parametrize("class_name,member", [
    (None, "retain_freed_memory"),
    (None, "DynamicNet"),
    ("DynamicNet", "measure_latency"),
    ("Execution", "PerGroup"),
    ("Connectivity", "valid_configs"),
    ("GroupSpec", "equal"),
    ("Config", "__init__"),
    ("DynamicConv2d", "_named_parameters"),
])
def test_a_missing_entry_is_caught(class_name, member):
    """The checks are not vacuous: dropping one entry from the stub is reported."""
    stub = _without(_load_stub(), class_name, member)
    problems = module_problems(stub) + [p for c in _runtime_classes() for p in class_problems(stub, c)]
    assert any(member in p for p in problems), problems


def test_a_wrong_signature_is_caught():
    """Renaming a keyword argument or changing a default in the stub is reported."""
    text = STUB_PATH.read_text()
    renamed = text.replace("def check_valid(self, config: _ConfigLike, who: str",
                           "def check_valid(self, config: _ConfigLike, caller: str")
    changed = text.replace("warmup: int = 20", "warmup: int = 21")
    keyword = text.replace("def is_valid(self, config: _ConfigLike, /)", "def is_valid(self, config: _ConfigLike)")
    for edited in (renamed, changed, keyword):
        assert edited != text, "the edit no longer applies: update this test with the stub"
        stub = Stub(ast.parse(edited))
        assert [p for c in _runtime_classes() for p in class_problems(stub, c)] != []
