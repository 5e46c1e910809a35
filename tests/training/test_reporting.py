"""Console lines and TensorBoard summaries of a run."""
from mtf_switch.training import reporting


def test_summarize_metrics_prints_one_line_per_layer():
  lines = reporting.summarize_metrics({
      "enc/ffn/dropped_fraction": 0.25, "enc/ffn/aux_loss": 0.01,
      "enc/ffn/router_confidence": 0.5, "enc/ffn/router_entropy": 1.0,
      "enc/ffn/expert_fraction": [0.75, 0.25],
      "dec/ffn/dropped_fraction": 0.0, "dec/ffn/aux_loss": 0.02,
      "dec/ffn/router_confidence": 0.4, "dec/ffn/router_entropy": 1.1,
      "dec/ffn/expert_fraction": [0.5, 0.5]})
  assert len(lines) == 2
  assert "enc/ffn: dropped 0.250" in lines[0]
  assert "expert load [0.75 0.25]" in lines[0]


def test_progress_line():
  line = reporting.progress_line(25, 300, 5.83771, 3.891, 1280)
  assert line == "step 25/300  loss 5.8377  3.89 steps/s  4980 tokens/s"
