"""Read the printed graph IR back into a Graph (the inverse of printer.py).

Large constants print as `<f32[64,3,3,3] @key>`; pass the arrays in
`weights` (for example `printer.collect_weights(graph)`). Types are
re-inferred while parsing and must agree with the printed ones, so a parsed
graph is as well-typed as one built in Python.
"""
from __future__ import annotations

import json
import re

import numpy as np

from .graph import Graph, Value
from .registry import IRError
from .types import DTYPES, TensorType

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<name>%(?:[A-Za-z_][A-Za-z0-9_.]*|"(?:[^"\\]|\\.)*"))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:inf|nan|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<key>@[^\s>]+)
  | (?P<punct>[(){}\[\]<>,:=])
""", re.VERBOSE)


class ParseError(IRError):
    pass


def _tokenize(text: str):
    pos, line = 0, 1
    out = []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    out.append(("eof", "", line))
    return out


class _Parser:
    def __init__(self, text: str, weights):
        self.toks = _tokenize(text)
        self.i = 0
        self.weights = weights or {}

    # -- token helpers
    def peek(self, value=None, kind=None):
        k, v, _ = self.toks[self.i]
        return (value is None or v == value) and (kind is None or k == kind)

    def next(self, value=None, kind=None):
        k, v, line = self.toks[self.i]
        if (value is not None and v != value) or (kind is not None and k != kind):
            want = repr(value) if value is not None else kind
            raise ParseError(f"line {line}: expected {want}, found {v!r}")
        self.i += 1
        return v

    def line(self):
        return self.toks[self.i][2]

    # -- grammar
    def name(self) -> str:
        v = self.next(kind="name")[1:]
        return json.loads(v) if v.startswith('"') else v

    def type(self) -> TensorType:
        dtype = self.next(kind="ident")
        if dtype not in DTYPES:
            raise ParseError(f"line {self.line()}: unknown dtype {dtype!r}")
        self.next("[")
        dims = []
        while not self.peek("]"):
            dims.append(int(self.next(kind="number")))
            if not self.peek("]"):
                self.next(",")
        self.next("]")
        return TensorType(tuple(dims), dtype)

    def literal(self):
        k, v, line = self.toks[self.i]
        if k == "number":
            self.i += 1
            return float(v) if any(c in v for c in ".en") else int(v)
        if k == "string":
            self.i += 1
            return json.loads(v)
        if v in ("true", "false"):
            self.i += 1
            return v == "true"
        if v == "[":
            self.i += 1
            items = []
            while not self.peek("]"):
                items.append(self.literal())
                if not self.peek("]"):
                    self.next(",")
            self.next("]")
            return items
        if v == "<":
            self.i += 1
            t = self.type()
            if self.peek(kind="key"):
                key = self.next()[1:]
                if key not in self.weights:
                    raise ParseError(f"line {line}: weight @{key} is not in the weights mapping")
                arr = np.asarray(self.weights[key])
            else:
                arr = np.array(self.literal(), dtype=t.np_dtype)
            self.next(">")
            if TensorType.of(arr) != t:
                raise ParseError(f"line {line}: tensor is {TensorType.of(arr)}, text says {t}")
            return arr
        raise ParseError(f"line {line}: expected a value, found {v!r}")

    def graph(self) -> Graph:
        self.next("graph")
        g = Graph(self.next(kind="ident"))
        env: dict[str, Value] = {}
        self.next("(")
        while not self.peek(")"):
            n = self.name()
            self.next(":")
            env[n] = g.add_input(n, self.type())
            if not self.peek(")"):
                self.next(",")
        self.next(")")
        self.next("{")
        while not self.peek("return"):
            self.statement(g, env)
        self.next("return")
        outs = []
        while self.peek(kind="name"):
            outs.append(self.lookup(env, self.name()))
            if self.peek(","):
                self.next(",")
        g.outputs = outs
        self.next("}")
        return g

    def lookup(self, env, name):
        if name not in env:
            raise ParseError(f"line {self.line()}: %{name} is not defined")
        return env[name]

    def statement(self, g: Graph, env: dict):
        line = self.line()
        names = [self.name()]
        while self.peek(","):
            self.next(",")
            names.append(self.name())
        self.next("=")
        op = self.next(kind="ident")
        self.next("(")
        args = []
        while not self.peek(")"):
            if self.peek("_"):
                self.next()
                args.append(None)
            else:
                args.append(self.lookup(env, self.name()))
            if not self.peek(")"):
                self.next(",")
        self.next(")")
        attrs = {}
        if self.peek("{"):
            self.next("{")
            while not self.peek("}"):
                key = self.next(kind="ident")
                self.next("=")
                attrs[key] = self.literal()
                if not self.peek("}"):
                    self.next(",")
            self.next("}")
        self.next(":")
        types = [self.type()]
        while self.peek(","):
            self.next(",")
            types.append(self.type())
        if self.peek("graph"):
            attrs["body"] = self.graph()
        loc = None
        if self.peek(kind="comment"):
            text = self.next()[1:].strip()
            loc = text.split("; ERROR:")[0].strip() if not text.startswith("ERROR:") else None
            loc = loc or None
        try:
            node = g.add(op, args, attrs, loc=loc, names=names, num_outputs=len(names))
        except IRError as e:
            raise ParseError(f"line {line}: {e}") from None
        for n, v, t in zip(names, node.outputs, types):
            if v.name != n:
                raise ParseError(f"line {line}: %{n} is defined twice")
            if v.type != t:
                raise ParseError(f"line {line}: %{n} is printed as {t} but its op infers {v.type}")
            env[n] = v


def parse_graph(text: str, weights: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse printed graph IR. `weights` resolves the `@key` references of large constants."""
    p = _Parser(text, weights)
    g = p.graph()
    p.next(kind="eof")
    return g
