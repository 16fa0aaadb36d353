"""The transform equations of ``onnx_edit``: parse ``'ab,c,d[a=2]->a,bc,1,d'`` and resolve it against a shape.

An equation names the dims of a tensor's original shape (left of ``->``) and of its new shape (right). Each dim
is a run of letters (``a``-``z``; several letters split or merge a dim, the first letter outermost) or ``1``
(a dim of size 1). A bracketed list after the left side gives sizes (``[a=2,k=8]``): a split dim may leave one
letter unassigned, which is inferred. Every left letter appears exactly once on the right; the right side may
add ``1`` dims and drop left ``1`` dims.

Resolving an equation against the tensor's shape gives each letter (an *atom*) a size, or none for a dynamic
dim; a :class:`Layout` is then a shape written as groups of atoms, which is all the graph rewrite and the
dataset transform need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rkfarm.errors import OnnxEditError

Dim = int | str | None  # a static size, a named dynamic dim, or an unnamed dynamic dim
Group = tuple[str, ...]  # the letters of one dim; () for a size-1 dim written '1'

_SIDE_CHARS = re.compile(r"[a-z1,]*")
_ASSIGN = re.compile(r"([a-z])=([0-9]+)")


@dataclass(frozen=True)
class Equation:
    """A parsed equation, not yet checked against a shape."""

    text: str
    left: tuple[Group, ...]
    right: tuple[Group, ...]
    assigned: dict[str, int]


@dataclass(frozen=True)
class Atom:
    """One letter of an equation: its size, or None when it is dynamic; ``label`` names a dynamic atom."""

    size: int | None
    label: str | None = None


@dataclass(frozen=True)
class Layout:
    """A shape as groups of atoms: each dim is the product of its group's atoms (an empty group is 1)."""

    groups: tuple[Group, ...]

    @staticmethod
    def flat(letters: Sequence[str]) -> Layout:
        """One dim per atom."""
        return Layout(tuple((a,) for a in letters))

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(a for g in self.groups for a in g)


@dataclass(frozen=True)
class Transform:
    """An equation resolved against a tensor: ``original`` and ``new`` layouts over the same atoms."""

    equation: Equation
    atoms: dict[str, Atom]
    original: Layout
    new: Layout
    original_labels: dict[Group, str | None]  # dynamic dims of the original shape, by group, keep their names

    def size(self, group: Group) -> tuple[int, tuple[str, ...]]:
        """A dim as (static factor, dynamic atoms): two dims are equal when these are."""
        static, dynamic = 1, []
        for letter in group:
            atom = self.atoms[letter]
            if atom.size is None:
                dynamic.append(letter)
            else:
                static *= atom.size
        return static, tuple(sorted(dynamic))

    def dim(self, group: Group) -> Dim:
        """A dim for a shape declaration or a log line: its size, or a name for a dynamic one."""
        static, dynamic = self.size(group)
        if not dynamic:
            return static
        if group in self.original_labels:
            return self.original_labels[group]
        parts = []
        for letter in group:
            atom = self.atoms[letter]
            if atom.size is None:
                if atom.label is None:
                    return None
                parts.append(atom.label)
            elif atom.size != 1:
                parts.append(str(atom.size))
        return "*".join(parts)

    def shape(self, layout: Layout) -> list[Dim]:
        return [self.dim(g) for g in layout.groups]

    def sizes(self, layout: Layout) -> list[tuple[int, tuple[str, ...]]]:
        return [self.size(g) for g in layout.groups]

    def steps(self, src: Layout, dst: Layout) -> list[Step]:
        """The fewest Reshape/Transpose steps (at most reshape, transpose, reshape) from ``src`` to ``dst``.

        A permutation that moves only size-1 atoms is a Reshape; a Reshape to an equal shape is dropped.
        """
        before, after = Layout.flat(src.letters), Layout.flat(dst.letters)
        perm = tuple(before.letters.index(a) for a in after.letters)
        moved = [p for p in perm if self.atoms[before.letters[p]].size != 1]
        if moved == sorted(moved):
            return [Step(None, dst)] if self.sizes(src) != self.sizes(dst) else []
        out = [Step(None, before)] if self.sizes(src) != self.sizes(before) else []
        out.append(Step(perm, after))
        if self.sizes(after) != self.sizes(dst):
            out.append(Step(None, dst))
        return out

    def concrete(self, shape: Sequence[int]) -> dict[str, int]:
        """Every atom's size for an actual array of the original shape; ValueError if a dim does not fit."""
        if len(shape) != len(self.original.groups):
            raise ValueError(f"it has {len(shape)} dims, the tensor has {len(self.original.groups)}")
        sizes: dict[str, int] = {}
        for index, (group, actual) in enumerate(zip(self.original.groups, shape)):
            static, dynamic = self.size(group)
            if dynamic:
                if actual % static:
                    raise ValueError(f"dim {index} is {actual}, which the equation cannot split by {static}")
                sizes[dynamic[0]] = actual // static
            elif actual != static:
                raise ValueError(f"dim {index} is {actual}, the tensor's dim {index} is {static}")
            sizes.update({a: size for a in group if (size := self.atoms[a].size) is not None})
        return sizes


@dataclass(frozen=True)
class Step:
    """One inserted op: a Transpose by ``perm`` (into ``target``), or a Reshape to ``target`` when perm is None."""

    perm: tuple[int, ...] | None
    target: Layout


def parse(text: object, where: str) -> Equation:
    """Parse an equation; ``where`` (e.g. ``"input 'x'"``) starts every error message."""
    if not isinstance(text, str):
        raise OnnxEditError(f"{where}: the equation must be a string like 'a,b,c->a,b,1,c', got {text!r}")

    def fail(problem: str) -> OnnxEditError:
        return OnnxEditError(f"{where}: equation {text!r}: {problem}")

    sides = text.split("->")
    if len(sides) != 2:
        raise fail("it needs exactly one '->' between the original shape and the new shape")
    left_text, right_text = sides
    assigned: dict[str, int] = {}
    if "[" in left_text or "]" in left_text:
        match = re.fullmatch(r"([^\[\]]*)\[([^\[\]]*)\]", left_text)
        if match is None:
            raise fail("the sizes must come last on the left side, in one bracket like '[a=2,k=8]'")
        left_text, assign_text = match.groups()
        for item in assign_text.split(","):
            item_match = _ASSIGN.fullmatch(item)
            if item_match is None:
                raise fail(f"size {item!r} should look like 'a=2' (one letter, '=', a positive integer)")
            letter, value = item_match.group(1), int(item_match.group(2))
            if letter in assigned:
                raise fail(f"letter {letter!r} is given a size twice")
            if value < 1:
                raise fail(f"letter {letter!r} is given size {value}; sizes must be at least 1")
            assigned[letter] = value
    left = _parse_side(left_text, "left", fail)
    right = _parse_side(right_text, "right", fail)
    seen: set[str] = set()
    for letter in (a for g in left for a in g):
        if letter in seen:
            raise fail(f"letter {letter!r} appears twice on the left side; each letter names one original dim")
        seen.add(letter)
    for letter in assigned:
        if letter not in seen:
            raise fail(f"letter {letter!r} is given a size but is not on the left side")
    right_letters = [a for g in right for a in g]
    for letter in right_letters:
        if letter not in seen:
            raise fail(f"letter {letter!r} on the right side is not on the left side")
    for letter in sorted(seen):
        count = right_letters.count(letter)
        if count != 1:
            where_right = "is missing on" if count == 0 else f"appears {count} times on"
            raise fail(f"letter {letter!r} {where_right} the right side; every left letter must appear there once")
    return Equation(text, left, right, assigned)


def _parse_side(text: str, side: str, fail: Callable[[str], OnnxEditError]) -> tuple[Group, ...]:
    if _SIDE_CHARS.fullmatch(text) is None:
        bad = next(c for c in text if not _SIDE_CHARS.fullmatch(c))
        raise fail(f"character {bad!r} is not allowed on the {side} side; use letters a-z, '1' and ','")
    groups: list[Group] = []
    for dim in text.split(","):
        if not dim:
            raise fail(f"the {side} side {text!r} has an empty dim")
        if dim == "1":
            groups.append(())
        elif "1" in dim:
            raise fail(f"dim {dim!r} on the {side} side mixes letters and '1'; a '1' stands alone")
        else:
            groups.append(tuple(dim))
    return tuple(groups)


def resolve(equation: Equation, shape: Sequence[Dim], where: str, *, kind: str) -> Transform:
    """Check ``equation`` against the tensor's ``shape`` and size every letter.

    ``kind`` is ``'input'`` or ``'output'``: a new input dim may hold at most one dynamic atom, because the
    inserted ops must split it back from the input's run-time shape; an output dim may merge several.
    """

    def fail(problem: str) -> OnnxEditError:
        return OnnxEditError(f"{where}: equation {equation.text!r}: {problem}")

    shown = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    if len(equation.left) != len(shape):
        raise fail(f"the left side has {len(equation.left)} dims but the tensor has {len(shape)} {shown}")
    atoms: dict[str, Atom] = {}
    labels: dict[Group, str | None] = {}
    for index, (group, dim) in enumerate(zip(equation.left, shape)):
        static = dim if isinstance(dim, int) and dim > 0 else None
        name = dim if isinstance(dim, str) else None
        text = "".join(group) or "1"
        if not group:
            if static != 1:
                raise fail(f"dim {index} is written '1' but the tensor's dim {index} is {dim if static else '?'}")
            continue
        free = [a for a in group if a not in equation.assigned]
        known = 1
        for letter in group:
            known *= equation.assigned.get(letter, 1)
        if len(free) > 1:
            what = f"dim {index} ({'dynamic' if static is None else static})"
            raise fail(
                f"{text!r} splits {what} into {len(group)} letters but gives no size to {', '.join(free)}: "
                "give sizes to all but one letter in [..]"
            )
        if static is not None and not free and known != static:
            raise fail(f"{text!r} has size {known} from the sizes given, but the tensor's dim {index} is {static}")
        if static is not None and free and static % known:
            raise fail(f"{text!r} cannot split dim {index} of size {static}: {static} is not a multiple of {known}")
        for letter in group:
            if letter in equation.assigned:
                atoms[letter] = Atom(equation.assigned[letter])
            elif static is not None:
                atoms[letter] = Atom(static // known)
            else:
                label = name if len(group) == 1 or name is None else f"{name}/{known}"
                atoms[letter] = Atom(None, label)
        if static is None and free:
            labels[group] = name
    for group in equation.right:
        dynamic = [a for a in group if atoms[a].size is None]
        if kind == "input" and len(dynamic) > 1:
            raise fail(
                f"new dim {''.join(group)!r} merges several dynamic dims ({', '.join(dynamic)}); the inserted ops "
                "could not split them apart again: give sizes to all but one of them in [..]"
            )
    return Transform(equation, atoms, Layout(equation.left), Layout(equation.right), labels)
