"""fold, dce, cse, simplify: golden IR on small graphs (random graphs: test_passes_random.py)."""
import pytest

from minidlc.passes.simplify import lossless_cast

from passes_util import check_golden


def test_fold_removes_shape_computation_chain():
    check_golden("fold,dce", """
    graph main(%x: f32[2,3,4]) {
      %s = Shape(%x) {start=0} : i64[3]
      %i = Constant() {value=<i64[1] [0]>} : i64[1]
      %b = Gather(%s, %i) {axis=0} : i64[1]
      %m = Constant() {value=<i64[1] [-1]>} : i64[1]
      %t = Concat(%b, %m) {axis=0} : i64[2]
      %r = Reshape(%x, %t) {allowzero=0} : f32[2,12]
      return %r
    }""", """
    graph main(%x: f32[2,3,4]) {
      %t = Constant() {value=<i64[2] [2, -1]>} : i64[2]
      %r = Reshape(%x, %t) {allowzero=0} : f32[2,12]
      return %r
    }""")


def test_fold_evaluates_constant_arithmetic():
    check_golden("fold,dce", """
    graph main(%x: f32[2]) {
      %a = Constant() {value=<f32[2] [1.0, 4.0]>} : f32[2]
      %b = Sqrt(%a) : f32[2]
      %c = Add(%b, %a) : f32[2]
      %y = Mul(%x, %c) : f32[2]
      return %y
    }""", """
    graph main(%x: f32[2]) {
      %c = Constant() {value=<f32[2] [2.0, 6.0]>} : f32[2]
      %y = Mul(%x, %c) : f32[2]
      return %y
    }""")


def test_fold_keeps_expand_of_a_scalar_to_a_big_tensor():
    src = """
    graph main(%x: f32[64,64]) {
      %v = Constant() {value=<f32[] 0.5>} : f32[]
      %s = Constant() {value=<i64[2] [64, 64]>} : i64[2]
      %e = Expand(%v, %s) : f32[64,64]
      %y = Add(%x, %e) : f32[64,64]
      return %y
    }"""
    check_golden("fold", src, src)


def test_dce_removes_unread_nodes_and_keeps_inputs():
    check_golden("dce", """
    graph main(%x: f32[2], %unused: f32[2]) {
      %a = Exp(%x) : f32[2]
      %b = Neg(%a) : f32[2]
      %c = Relu(%x) : f32[2]
      return %c
    }""", """
    graph main(%x: f32[2], %unused: f32[2]) {
      %c = Relu(%x) : f32[2]
      return %c
    }""")


def test_cse_merges_equal_nodes_and_constants_but_not_different_attrs():
    check_golden("cse", """
    graph main(%x: f32[2]) {
      %c1 = Constant() {value=<f32[] 2.0>} : f32[]
      %c2 = Constant() {value=<f32[] 2.0>} : f32[]
      %a = Mul(%x, %c1) : f32[2]
      %b = Mul(%x, %c2) : f32[2]
      %l1 = LeakyRelu(%a) {alpha=0.1} : f32[2]
      %l2 = LeakyRelu(%b) {alpha=0.2} : f32[2]
      %l3 = LeakyRelu(%b) {alpha=0.1} : f32[2]
      %s = Sum(%l1, %l2, %l3) : f32[2]
      return %s
    }""", """
    graph main(%x: f32[2]) {
      %c1 = Constant() {value=<f32[] 2.0>} : f32[]
      %a = Mul(%x, %c1) : f32[2]
      %l1 = LeakyRelu(%a) {alpha=0.1} : f32[2]
      %l2 = LeakyRelu(%a) {alpha=0.2} : f32[2]
      %s = Sum(%l1, %l2, %l1) : f32[2]
      return %s
    }""")


def test_cse_merges_large_constants_only_when_every_element_is_equal():
    """Constants hash by their first and last elements; equal ones still need every byte equal."""
    import numpy as np

    from minidlc.ir import Graph, TensorType
    from minidlc.passes.cse import CommonSubexpressionElimination

    g = Graph()
    x = g.add_input("x", TensorType((40,)))
    w = np.arange(40, dtype=np.float32)
    other = w.copy()
    other[20] = -1  # differs only in the middle
    adds = [g.add("Add", [x, g.constant(c)]).output for c in (w, w.copy(), other, w.astype(np.float64).astype(np.float32))]
    g.outputs = [g.add("Sum", adds).output]
    g, changed = CommonSubexpressionElimination().run(g)
    assert changed
    constants = [n for n in g.nodes if n.op == "Constant"]
    assert len(constants) == 2 and any(np.array_equal(n.attrs["value"], other) for n in constants)


def test_simplify_removes_identities_and_neutral_constants():
    check_golden("simplify", """
    graph main(%x: f32[2,3]) {
      %one = Constant() {value=<f32[] 1.0>} : f32[]
      %zero = Constant() {value=<f32[3] [0.0, 0.0, 0.0]>} : f32[3]
      %a = Identity(%x) : f32[2,3]
      %b, %mask = Dropout(%a) : f32[2,3], bool[2,3]
      %c = Mul(%one, %b) : f32[2,3]
      %d = Add(%c, %zero) : f32[2,3]
      %e = Sub(%d, %zero) : f32[2,3]
      %f = Div(%e, %one) : f32[2,3]
      %g = Tanh(%f) : f32[2,3]
      return %g
    }""", """
    graph main(%x: f32[2,3]) {
      %g = Tanh(%x) : f32[2,3]
      return %g
    }""")


def test_simplify_keeps_broadcasting_add_zero_and_dropout_whose_mask_is_used():
    src = """
    graph main(%x: f32[3]) {
      %zero = Constant() {value=<f32[2,3] [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]>} : f32[2,3]
      %d = Add(%x, %zero) : f32[2,3]
      %y, %mask = Dropout(%x) : f32[3], bool[3]
      return %d, %mask
    }"""
    check_golden("simplify", src, src)


def test_simplify_sub_and_div_by_constants_become_add_and_mul_only_when_exact():
    check_golden("simplify", """
    graph main(%x: f32[2]) {
      %c = Constant() {value=<f32[2] [0.25, 3.0]>} : f32[2]
      %p = Constant() {value=<f32[2] [0.25, -4.0]>} : f32[2]
      %a = Sub(%x, %c) : f32[2]
      %b = Div(%a, %c) : f32[2]
      %d = Div(%b, %p) : f32[2]
      return %d
    }""", """
    graph main(%x: f32[2]) {
      %c = Constant() {value=<f32[2] [0.25, 3.0]>} : f32[2]
      %a.neg = Constant() {value=<f32[2] [-0.25, -3.0]>} : f32[2]
      %a_0 = Add(%x, %a.neg) : f32[2]
      %b = Div(%a_0, %c) : f32[2]
      %d.recip = Constant() {value=<f32[2] [4.0, -0.25]>} : f32[2]
      %d_1 = Mul(%b, %d.recip) : f32[2]
      return %d_1
    }""")


def test_simplify_collapses_view_and_transpose_chains():
    check_golden("simplify", """
    graph main(%x: f32[2,3,4]) {
      %s1 = Constant() {value=<i64[2] [6, 4]>} : i64[2]
      %s2 = Constant() {value=<i64[3] [3, 2, 4]>} : i64[3]
      %a = Reshape(%x, %s1) : f32[6,4]
      %b = Reshape(%a, %s2) : f32[3,2,4]
      %u = Unsqueeze(%x) {axes=[0]} : f32[1,2,3,4]
      %q = Squeeze(%u) {axes=[0]} : f32[2,3,4]
      %t1 = Transpose(%q) {perm=[1, 0, 2]} : f32[3,2,4]
      %t2 = Transpose(%t1) {perm=[1, 0, 2]} : f32[2,3,4]
      %t3 = Transpose(%t2) {perm=[2, 0, 1]} : f32[4,2,3]
      %t4 = Transpose(%t3) {perm=[0, 2, 1]} : f32[4,3,2]
      return %b, %t4
    }""", """
    graph main(%x: f32[2,3,4]) {
      %b.shape = Constant() {value=<i64[3] [3, 2, 4]>} : i64[3]
      %b_0 = Reshape(%x, %b.shape) {allowzero=0} : f32[3,2,4]
      %t4_1 = Transpose(%x) {perm=[2, 1, 0]} : f32[4,3,2]
      return %b_0, %t4_1
    }""")


def test_simplify_cast_chains_only_when_the_first_cast_is_lossless():
    check_golden("simplify", """
    graph main(%x: i32[3], %y: f32[3]) {
      %a = Cast(%x) {to="i64"} : i64[3]
      %b = Cast(%a) {to="f32"} : f32[3]
      %c = Cast(%y) {to="i32"} : i32[3]
      %d = Cast(%c) {to="f32"} : f32[3]
      %e = Cast(%y) {to="f64"} : f64[3]
      %f = Cast(%e) {to="f32"} : f32[3]
      %g = Add(%b, %d) : f32[3]
      %h = Add(%g, %f) : f32[3]
      return %h
    }""", """
    graph main(%x: i32[3], %y: f32[3]) {
      %b_0 = Cast(%x) {to="f32"} : f32[3]
      %c = Cast(%y) {to="i32"} : i32[3]
      %d = Cast(%c) {to="f32"} : f32[3]
      %g = Add(%b_0, %d) : f32[3]
      %h = Add(%g, %y) : f32[3]
      return %h
    }""")


@pytest.mark.parametrize("src,dst,ok", [("f16", "f32", True), ("f32", "f16", False), ("i8", "f16", True),
                                        ("i32", "f32", False), ("i32", "f64", True), ("u8", "i8", False),
                                        ("u8", "i16", True), ("bool", "u8", True), ("i8", "bool", False)])
def test_lossless_cast(src, dst, ok):
    assert lossless_cast(src, dst) is ok
