"""benchmarks/peer_ops.py: how it groups the two frameworks' op types and
what it takes to grow with the widths."""
import helpers


def _peer_ops():
  return helpers.benchmark("peer_ops")


def test_matrix_products_are_told_from_the_rest_in_either_framework():
  peer_ops = _peer_ops()
  assert peer_ops.group("mtf_switch", "Einsum") == "matmul"
  assert peer_ops.group("mtf_switch", "BatchMatMulV2") == "matmul"
  assert peer_ops.group("mtf_switch", "AddV2") == "elementwise"
  assert peer_ops.group("hf", "aten::addmm") == "matmul"
  assert peer_ops.group("hf", "aten::mul") == "elementwise"
  # A name of the other framework is not taken for a matmul.
  assert peer_ops.group("hf", "Einsum") == "elementwise"


def test_growth_is_the_full_widths_minus_the_shrunk_ones_per_group():
  peer_ops = _peer_ops()
  traces = {
      ("mtf_switch", "b", "dense"): ({"Einsum": 10.0, "Mul": 3.0,
                                      "AddV2": 1.0}, 2400, 0.030),
      ("mtf_switch", "c", "dense"): ({"Einsum": 4.0, "Mul": 2.5,
                                      "AddV2": 1.0}, 2400, 0.014),
      ("hf", "b", "dense"): ({"aten::mm": 6.0, "aten::mul": 2.0}, 770,
                             0.025),
      ("hf", "c", "dense"): ({"aten::mm": 3.0, "aten::mul": 1.5}, 770,
                             0.015),
      ("hf", "a", "switch"): ({"aten::mm": 30.0}, 2000, 0.1),
  }
  rows = peer_ops.rows(traces)
  mtf_b = {r["what"]: r["ms"] for r in rows
           if (r["framework"], r["shapes"]) == ("mtf_switch", "b")}
  assert mtf_b["matmul"] == 10.0 and mtf_b["elementwise"] == 4.0
  assert mtf_b["all ops"] == 14.0 and mtf_b["step (untraced median)"] == 30.0
  assert list(mtf_b)[4:] == ["op Einsum", "op Mul", "op AddV2"]  # largest first
  grown = peer_ops.growth(rows)
  assert grown[("mtf_switch", "dense")] == {
      "step (untraced median)": 16.0, "all ops": 6.5, "matmul": 6.0,
      "elementwise": 0.5}
  assert grown[("hf", "dense")]["matmul"] == 3.0
  assert ("hf", "switch") not in grown  # no set b or c
