"""The designs of a component study: which of k components each variant turns on.

`full`: every combination (2^k). `fractional`: the smallest regular two-level fraction of
resolution IV or more (no main effect aliased with another or with a two-factor interaction;
resolution V where it costs no more runs), from the textbook's generators, built by pyDOE3's
`fracfact`. `leave-one-out`: everything on, then each component off; `add-one-in`: everything
off, then each on. A fraction's defining relation gives each effect's aliases, with signs.

No torch is imported here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ablate.errors import UsageError, unknown_name

DESIGNS = ("full", "fractional", "leave-one-out", "add-one-in")
MAX_COMPONENTS = 12
LETTERS = "ABCDEFGHJKLM"  # the textbook's factor letters (no I: it is the identity of the defining relation)

# The smallest two-level fractions of resolution IV or more, k = 4 to 12 factors: the added factors'
# generators in the base factors' letters (Montgomery, Design and Analysis of Experiments, 8th ed.,
# Table 8.14; Box, Hunter & Hunter 2005, Table 6.22). 12 factors: the 11-factor design's generators and
# M = ABCDE; every generator of odd length makes every word of the defining relation 4 letters or
# more. With 3 factors or fewer the smallest fraction of resolution IV is the full design.
GENERATORS = {
    4: ("ABC",),  # 2^(4-1), resolution IV, 8 runs
    5: ("ABCD",),  # 2^(5-1), V, 16
    6: ("ABC", "BCD"),  # 2^(6-2), IV, 16
    7: ("ABC", "BCD", "ACD"),  # 2^(7-3), IV, 16
    8: ("BCD", "ACD", "ABC", "ABD"),  # 2^(8-4), IV, 16
    9: ("BCDE", "ACDE", "ABDE", "ABCE"),  # 2^(9-4), IV, 32
    10: ("ABCD", "ABCE", "ABDE", "ACDE", "BCDE"),  # 2^(10-5), IV, 32
    11: ("ABC", "BCD", "CDE", "ACD", "ADE", "BDE"),  # 2^(11-6), IV, 32
    12: ("ABC", "BCD", "CDE", "ACD", "ADE", "BDE", "ABCDE"),  # 2^(12-7), IV, 32
}

Term = tuple[str, ...]  # an effect: the components whose product it is, in the study's order


@dataclass(frozen=True)
class Component:
    name: str  # a setting or a constructor argument of the model
    off: object
    on: object


@dataclass(frozen=True)
class Design:
    kind: str
    components: tuple[Component, ...]
    rows: tuple[tuple[int, ...], ...]  # per variant: 1 where the component is on
    generators: tuple[tuple[str, Term, int], ...] = ()  # (added component, the base product, sign)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def variant_name(self, row: tuple[int, ...]) -> str:
        """The components on, joined by +; none, all (two or more components), or, in a
        leave-one-out design, all but the one off."""
        on = [n for n, x in zip(self.names, row) if x]
        if self.kind == "leave-one-out" and len(on) == len(row) - 1 > 0:
            return "all but " + next(n for n, x in zip(self.names, row) if not x)
        if not on:
            return "none"
        return "all" if len(on) == len(row) > 1 else "+".join(on)

    def variants(self) -> dict[str, dict]:
        """Variant name -> the settings it gives each component."""
        return {self.variant_name(row): {c.name: c.on if x else c.off for c, x in zip(self.components, row)}
                for row in self.rows}

    def row_of(self) -> dict[str, tuple[int, ...]]:
        return {self.variant_name(row): row for row in self.rows}

    # ------------------------------------------------------------ aliases

    def relation(self) -> dict[frozenset, int]:
        """The defining relation: each word (a set of components) with its sign; empty for a
        design that is not a regular fraction (full, leave-one-out, add-one-in)."""
        words = [(frozenset((added, *base)), sign) for added, base, sign in self.generators]
        relation = {}
        for r in range(1, len(words) + 1):
            for chosen in itertools.combinations(words, r):
                word, sign = frozenset(), 1
                for w, s in chosen:
                    word, sign = word ^ w, sign * s
                relation[word] = sign
        return relation

    @property
    def resolution(self) -> int | None:
        """The shortest word of the defining relation (None: a full design, no alias)."""
        relation = self.relation()
        return min(map(len, relation)) if relation else None

    def aliases(self, term: Term) -> list[tuple[Term, int]]:
        """The effects aliased with `term`, each with its sign, shortest first."""
        order = {n: i for i, n in enumerate(self.names)}
        out = [(tuple(sorted(frozenset(term) ^ word, key=order.get)), sign) for word, sign in self.relation().items()]
        return sorted(out, key=lambda t: (len(t[0]), [order[n] for n in t[0]]))

    def interactions(self) -> list[tuple[Term, list[tuple[Term, int]]]]:
        """The two-factor interactions the design estimates, each with its aliases of two
        factors: one per alias chain, none aliased with a main effect (full and regular
        fractions; none in leave-one-out and add-one-in)."""
        if self.kind not in ("full", "fractional"):
            return []
        seen, out = set(), []
        for pair in itertools.combinations(self.names, 2):
            if pair in seen:
                continue
            chain = self.aliases(pair)
            if any(len(t) < 2 for t, _ in chain):
                continue
            twos = [(t, s) for t, s in chain if len(t) == 2]
            seen.update(t for t, _ in twos)
            out.append((pair, twos))
        return out

    def said(self, term: Term, chain: list[tuple[Term, int]] | None = None, most: int = 2) -> str:
        """'a×b + c×e': the effect with its aliases of up to `most` factors."""
        chain = self.aliases(term) if chain is None else chain
        text = "×".join(term)
        for other, sign in chain:
            if len(other) <= most:
                text += f" {'+' if sign > 0 else '−'} {'×'.join(other)}"
        return text

    # ------------------------------------------------------------ the file's metadata

    def to_metadata(self) -> dict:
        return {"design": self.kind,
                "components": [{"name": c.name, "off": c.off, "on": c.on} for c in self.components],
                "variants": {self.variant_name(r): list(r) for r in self.rows},
                "generators": [{"component": a, "product": list(b), "sign": s} for a, b, s in self.generators],
                "resolution": self.resolution,
                "defining_relation": [("" if s > 0 else "-") + "×".join(sorted(w, key=self.names.index))
                                      for w, s in self.relation().items()],
                "aliases": {"×".join(t): self.said(t, most=3) for t in [*((n,) for n in self.names),
                                                                   *(p for p, _ in self.interactions())]
                             if self.generators}}

    @classmethod
    def from_metadata(cls, record) -> Design | None:
        """The design a file's metadata `components` holds; None where it is missing or damaged."""
        try:
            components = tuple(Component(c["name"], c["off"], c["on"]) for c in record["components"])
            names = [c.name for c in components]
            rows = tuple(tuple(int(x) for x in row) for row in record["variants"].values())
            generators = tuple((g["component"], tuple(g["product"]), int(g["sign"])) for g in record["generators"])
            if record["design"] not in DESIGNS or not all(isinstance(n, str) for n in names) \
                    or len(set(names)) != len(names) or not rows \
                    or any(len(r) != len(names) or set(r) - {0, 1} for r in rows) \
                    or any(a not in names or set(b) - set(names) or s not in (1, -1) for a, b, s in generators):
                return None
            design = cls(record["design"], components, rows, generators)
            made = make(design.kind, list(components))  # what ablate makes of it: the rows the effects read
            same = set(made.rows) == set(rows) and made.generators == generators and made.kind == design.kind
            return design if same and set(design.row_of()) == set(record["variants"]) else None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def make(kind: str, components: list[Component]) -> Design:
    """The design `kind` of `components`, refused in one line where it cannot be made."""
    if kind not in DESIGNS:
        raise unknown_name("design", kind, list(DESIGNS))
    k = len(components)
    if not 1 <= k <= MAX_COMPONENTS:
        raise UsageError(f"{k} components; a component study takes 1 to {MAX_COMPONENTS} (a design of more "
                         "is too large to train or to read)")
    if kind == "full" or (kind == "fractional" and k <= 3):  # no smaller fraction of resolution IV: every combination
        rows = tuple(tuple(reversed(r)) for r in itertools.product((0, 1), repeat=k))
        return Design("full", tuple(components), rows)
    if kind == "leave-one-out":
        rows = ((1,) * k, *(tuple(int(i != j) for i in range(k)) for j in range(k)))
        return Design(kind, tuple(components), rows)
    if kind == "add-one-in":
        rows = ((0,) * k, *(tuple(int(i == j) for i in range(k)) for j in range(k)))
        return Design(kind, tuple(components), rows)
    return _fraction(components)


def _fraction(components: list[Component]) -> Design:
    """The textbook's fraction, with each generator's sign chosen so that the design holds the
    variant with every component off (the baseline a study compares with)."""
    from pyDOE3 import fracfact

    k = len(components)
    added = GENERATORS[k]
    base = k - len(added)
    signs = [-1 if len(g) % 2 == 0 else 1 for g in added]  # all off (-1) in the base gives -1 here
    spec = " ".join([*LETTERS[:base].lower(), *(("-" if s < 0 else "") + g.lower() for g, s in zip(added, signs))])
    matrix = fracfact(spec)
    rows = tuple(tuple(int(x > 0) for x in row) for row in matrix)
    names = [c.name for c in components]
    letter = dict(zip(LETTERS, names))
    generators = tuple((names[base + i], tuple(letter[c] for c in g), s) for i, (g, s) in enumerate(zip(added, signs)))
    return Design("fractional", tuple(components), rows, generators)
