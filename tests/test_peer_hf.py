"""benchmarks/peer_hf.py: the HuggingFace twins it builds, what it measures
where, and the rows it makes of the times."""
import gin
import pytest

import helpers
from mtf_switch import models
from mtf_switch.planning import model_size

_VOCAB = 2100  # the default task's, which the benchmark reads from seqio


def _benchmark():
  return helpers.benchmark("peer_hf")


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _hf_model(config_class, config):
  pytest.importorskip("transformers")
  model, _ = _benchmark().hf_twin(config_class, config)
  return model


@pytest.mark.parametrize("shapes,model", [("a", "switch"), ("a", "dense"),
                                          ("b", "switch"), ("b", "dense"),
                                          ("c", "switch"), ("c", "dense")])
def test_hf_twin_has_the_parameters_model_size_counts(shapes, model):
  benchmark = _benchmark()
  benchmark.parse_gin(shapes, model)
  config_class, config = benchmark.hf_twin_config(
      models.make_model(_VOCAB))
  assert config_class == {"switch": "switch", "dense": "t5"}[model]
  # model_size counts the variables of the mtf graph it builds: an
  # independent road to the number the twin's config gives HuggingFace.
  size = model_size.count(input_length=64, target_length=16,
                          vocab_size=_VOCAB, batch_size=16)
  params = list(_hf_model(config_class, config).named_parameters())
  assert sum(p.numel() for _, p in params) == size.total_params
  assert (sum(p.numel() for n, p in params if ".experts." in n)
          == size.expert_params)
  assert config["vocab_size"] == 2176  # 2100 padded to a multiple of 128
  assert config["dropout_rate"] == 0.0


def test_shape_set_a_is_the_issues():
  benchmark = _benchmark()
  benchmark.parse_gin("a", "switch")
  _, config = benchmark.hf_twin_config(models.make_model(_VOCAB))
  assert {k: config[k] for k in (
      "d_model", "d_ff", "d_kv", "num_heads", "num_layers",
      "num_decoder_layers", "num_sparse_encoder_layers",
      "num_sparse_decoder_layers", "num_experts")} == dict(
          d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=4,
          num_decoder_layers=4, num_sparse_encoder_layers=2,
          num_sparse_decoder_layers=2, num_experts=8)
  assert config["router_jitter_noise"] == 0.01


@pytest.mark.parametrize("shapes,capacity", [("a", 10), ("b", 20)])
def test_expert_capacity_is_mtf_switchs_for_one_input_sequence(shapes,
                                                               capacity):
  benchmark = _benchmark()
  benchmark.parse_gin(shapes, "switch")
  mtf_model = models.make_model(_VOCAB)
  _, config = benchmark.hf_twin_config(mtf_model)
  # ceil(64 tokens x 1.25 / experts): 8 experts in a, 4 in b.
  assert config["expert_capacity"] == capacity
  note = benchmark.capacity_note(mtf_model)
  assert ("encoder groups of 64 tokens (1 sequence), capacity %d"
          % capacity) in note
  assert ("decoder groups of 64 tokens (4 sequences), capacity %d"
          % capacity) in note


def test_settings_that_bind_a_process_get_their_own_worker():
  benchmark = _benchmark()
  configs = {"vocab_size": _VOCAB}
  for model in ("switch", "dense"):
    configs[("b", model)] = ("switch" if model == "switch" else "t5", {})
  items = benchmark.plan(["b"], ["switch", "dense"],
                         list(benchmark.EXPERIMENTS), configs)
  workers = {(i["model"], i["variant"], i["mesh"]): i["worker"]
             for i in items}
  assert workers[("switch", "hf", "")] == "hf"
  assert workers[("dense", "hf_threads1", "")] == "hf_threads1"
  assert workers[("switch", "main_job", "1 device")] == "tf"
  assert workers[("switch", "main_job", "batch:1,experts:2")] == "tf"
  assert workers[("switch", "train_op", "1 device")] == "tf"
  assert workers[("switch", "index", "1 device")] == "tf"  # gin only
  assert workers[("dense", "xla_on1", "1 device")] == "tf_xla_on1"
  assert ("dense", "index", "1 device") not in workers  # Switch only
  assert workers[("dense", "expert_data2", "batch:2")] == "tf"  # a graph
  # A session config in the default rows' process, asked for by name.
  assert workers[("dense", "inter2", "1 device")] == "tf_inter2"
  assert workers[("dense", "inter2_here", "1 device")] == "tf"
  specs = {(i["model"], i["variant"], i["mesh"]): i["spec"] for i in items}
  assert specs[("dense", "main_job_noprefetch", "1 device")][
      "prefetch_batches"] == 0
  assert specs[("dense", "main_job_noprefetch", "1 device")][
      "what"] == "main_job"
  assert workers[("dense", "main_job_noprefetch", "1 device")] == "tf"
  assert workers[("dense", "alone", "1 device")] == "tf_alone"
  assert workers[("dense", "onednn_off", "1 device")] == "tf_onednn_off"
  assert workers[("switch", "main_job_alone", "1 device")] == (
      "tf_main_job_alone")
  assert specs[("switch", "main_job_alone", "1 device")]["what"] == (
      "main_job")
  by_worker = {}
  for item in items:
    by_worker.setdefault(item["worker"], set()).add(
        (item["kind"], item["env"].get("TF_XLA_FLAGS"),
         item["env"].get("OMP_WAIT_POLICY")))
  # One kind and one environment per process.
  assert all(len(kinds) == 1 for kinds in by_worker.values())
  assert by_worker["tf_xla_auto2"] == {
      ("tf", "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit", None)}
  assert by_worker["hf_passive"] == {("hf", None, "PASSIVE")}


def test_rows_give_medians_spreads_and_ratios_to_hfs_same_model():
  benchmark = _benchmark()
  items = [
      dict(framework="hf", model="switch", shapes="b", variant="hf",
           mesh="", params=10, ops_per_step=5),
      dict(framework="hf", model="switch", shapes="b",
           variant="hf_threads1", mesh="", params=10, ops_per_step=5),
      dict(framework="mtf_switch", model="switch", shapes="b",
           variant="train_op", mesh="1 device", params=10,
           ops_per_step=50, optimizer_ops=30),
      dict(framework="mtf_switch", model="switch", shapes="b",
           variant="empty_run", mesh="1 device", params=10, ops_per_step=2),
      dict(framework="seqio", model="-", shapes="b", variant="seqio_next",
           mesh=""),
  ]
  times = {0: [0.2, 0.1, 0.4], 1: [0.1, 0.1, 0.1], 2: [0.05, 0.3, 0.25],
           3: [0.001, 0.001, 0.002], 4: [0.01, 0.01, 0.01]}
  rows = benchmark.rows(items, times)
  hf, threads1, step, empty, seqio = rows
  assert hf["s_per_step"] == 0.2 and hf["vs_hf"] == 1.0
  assert (hf["spread_min"], hf["spread_max"]) == (0.1, 0.4)
  assert hf["tokens_per_s"] == 16 * 80 / 0.2
  assert threads1["vs_hf"] == 0.5  # against the 2-thread row
  assert step["vs_hf"] == 1.25
  assert (step["optimizer_ops"], hf["optimizer_ops"]) == (30, "")
  assert empty["tokens_per_s"] == ""  # not a training step
  assert seqio["vs_hf"] == "" and seqio["params"] == ""


def test_fixed_costs_set_the_gap_at_full_widths_beside_the_shrunk_ones():
  benchmark = _benchmark()

  def row(framework, shapes, variant, seconds, ops):
    return dict(framework=framework, model="dense", shapes=shapes,
                variant=variant, mesh="", s_per_step=seconds,
                ops_per_step=ops)
  result = [row("hf", "b", "hf", 0.025, 800),
            row("mtf_switch", "b", "train_op", 0.03, 2400),
            row("mtf_switch", "b", "fed", 0.05, 2400),  # not the step op
            row("hf", "c", "hf", 0.008, 800),
            row("mtf_switch", "c", "train_op", 0.012, 2400),
            row("hf", "a", "hf", 0.1, 800)]
  (costs,) = benchmark.fixed_costs(result)
  assert costs["gap_full"] == pytest.approx(0.005)
  assert costs["gap_shrunk"] == pytest.approx(0.004)
  assert costs["hf_us_per_op"] == 10.0
  assert costs["mtf_us_per_op"] == 5.0
  # A model without its set-c rows has no line.
  assert not benchmark.fixed_costs(result[:3])
