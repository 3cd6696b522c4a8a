"""A network's constructor arguments (name, kind, default), read without importing the network.

A config is checked before torch and diffusers load (see softdiff.choices), so a net named by its module path is
read from its source: the ``__init__`` of the class, parsed by ``ast`` (nothing is executed; defaults must be
literals). A net given as a class object is read with ``inspect``. Both give the same answer
(tests/test_net_registry.py checks it for every shipped net).
"""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

NO_DEFAULT = object()
KINDS = ("int", "float", "bool", "str")


@dataclass(frozen=True)
class Argument:
    name: str
    kind: str | None        # int | float | bool | str, or None where the annotation says something else
    optional: bool          # None is a valid value
    default: object = NO_DEFAULT

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT


def annotation_kind(text: str | None, default: object = NO_DEFAULT) -> tuple[str | None, bool]:
    """(kind, optional) from an annotation's text (``int``, ``int | None``, ``Optional[float]``); without an
    annotation, from the default's type."""
    if not text:
        kind = type(default).__name__ if default is not NO_DEFAULT and default is not None else None
        return (kind if kind in KINDS else None), default is None
    text = text.replace(" ", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = f"{text[len('Optional['):-1]}|None"
    parts = set(text.split("|"))
    optional = "None" in parts
    parts.discard("None")
    kind = parts.pop() if len(parts) == 1 else None
    return (kind if kind in KINDS else None), optional


def _from_source(module: str, class_name: str) -> dict[str, Argument]:
    spec = find_spec(module)
    if spec is None or not spec.origin:
        raise ValueError(f"network module {module!r} is not installed")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    init = next((n for n in (cls.body if cls else []) if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None)
    if init is None:
        raise ValueError(f"{module} defines no class {class_name} with an __init__")
    args = init.args.args[1:] + init.args.kwonlyargs  # self first
    defaults = [NO_DEFAULT] * (len(init.args.args) - 1 - len(init.args.defaults)) + list(init.args.defaults)
    defaults += list(init.args.kw_defaults)
    out = {}
    for arg, node in zip(args, defaults):
        default = NO_DEFAULT if node is NO_DEFAULT or node is None else ast.literal_eval(node)
        kind, optional = annotation_kind(ast.unparse(arg.annotation) if arg.annotation else None, default)
        out[arg.arg] = Argument(arg.arg, kind, optional, default)
    return out


def _from_class(cls: type) -> dict[str, Argument]:
    out = {}
    for name, p in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = NO_DEFAULT if p.default is p.empty else p.default
        text = None if p.annotation is p.empty else (
            p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation))
        kind, optional = annotation_kind(text, default)
        out[name] = Argument(name, kind, optional, default)
    return out


def constructor_arguments(target: str | type) -> dict[str, Argument]:
    """The arguments of ``target``'s ``__init__`` in order: ``target`` is ``"package.module:Class"`` or a class."""
    if isinstance(target, str):
        module, _, class_name = target.partition(":")
        return _from_source(module, class_name)
    return _from_class(target)
