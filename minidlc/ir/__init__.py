"""The graph IR: types, values, nodes, graphs, the op registry, printer, parser, verifier."""
from .graph import Graph, Node, Value
from .interpreter import interpret
from .parser import ParseError, parse_graph
from .printer import collect_weights, print_graph
from .registry import OPS, Attr, IRError, Kind, OpDef, get_op, register
from .types import DTYPES, TensorType
from .verifier import VerifyError, verify

__all__ = ["Graph", "Node", "Value", "interpret", "ParseError", "parse_graph", "collect_weights",
           "print_graph", "OPS", "Attr", "IRError", "Kind", "OpDef", "get_op", "register", "DTYPES",
           "TensorType", "VerifyError", "verify"]
