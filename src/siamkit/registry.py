"""Classes named by import path (``"package.module:Class"``) or by entry point.

A saved model names the classes that rebuild it: siamkit's own by their registered names,
a user's by import path or by a name another package registers under an entry point
group (``[project.entry-points."siamkit.encoders"]``). Loading a model imports the code it
names, as installing a package does: load models from sources you trust. Only subclasses
of the expected base class are built, so a card cannot name an arbitrary callable.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

__all__ = ["class_path", "import_class", "entry_point_class", "entry_point_names"]


def class_path(cls: type) -> str:
    """``"module:Qualname"`` of a class, refusing classes no other process can import
    (defined inside a function)."""
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is defined inside a function: a saved model "
                         f"must name a class importable from a module; define it at the top "
                         f"level of a module")
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str, base: type) -> type:
    """The class ``"module:Qualname"`` names, which must subclass ``base``.

    Raises ValueError naming the path and what went wrong (module missing, no such class,
    not a ``base``).
    """
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:Class'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {path} ({exc}): install the package that defines "
                         f"it, or put its module on PYTHONPATH") from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"cannot import {path}: module {module_name} has no {qualname}")
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise ValueError(f"{path} is not a {base.__module__}.{base.__qualname__} class")
    return obj


def entry_point_names(group: str) -> list[str]:
    """Names other installed packages register under the entry point ``group``."""
    return sorted({ep.name for ep in entry_points(group=group)})


def entry_point_class(group: str, name: str, base: type) -> type | None:
    """The class an installed package registers as ``name`` under ``group`` (None when no
    package does); it must subclass ``base``."""
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        return None
    try:
        cls = found[0].load()
    except Exception as exc:  # a broken plugin: say which one, whatever it raised
        raise ValueError(f"entry point {group}:{name} ({found[0].value}) failed to load: "
                         f"{exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"entry point {group}:{name} ({found[0].value}) is not a "
                         f"{base.__qualname__} class")
    return cls
