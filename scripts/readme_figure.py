r"""Draws the README's headline figure from the committed experts_1x study.

  python scripts/readme_figure.py   # writes docs/figures/headline.png

Left: validation loss against training steps of the dense model and
Switch-32 at capacity factor 2.0 (mean of 3 seeds, +- 1 std shaded), with
the step at which Switch reaches dense's final loss.  Right: the expert
ladder, final validation loss of Switch-2 to Switch-128 against dense's.
Everything is read from docs/studies/experts_1x/curves; nothing is trained.
"""
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from mtf_switch.studies import report
from mtf_switch.studies import study as study_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURVES = os.path.join(ROOT, "docs", "studies", "experts_1x", "curves")
OUT = os.path.join(ROOT, "docs", "figures", "headline.png")
DENSE = "dense_init1.0"
SWITCH = "switch_32_cf2.0_init1.0"
LADDER = [(n, "switch_%d_init1.0" % n) for n in (2, 4, 8, 16, 32, 64, 128)]
SEEDS = (1, 2, 3)


def runs(model):
  """{seed: curve rows} of a model's committed runs."""
  return {seed: study_lib.read_curve(
      os.path.join(CURVES, "%s-seed%d.csv" % (model, seed)))
          for seed in SEEDS}


def main():
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
  dense_final, dense_std = report.final_loss(runs(DENSE))
  for model, label in ((DENSE, "dense"),
                       (SWITCH, "Switch-32, capacity factor 2.0")):
    steps, loss, std = report.mean_curve(runs(model), "validation_loss")
    line, = left.plot(steps, loss, label=label + " (3 seeds)")
    left.fill_between(steps, loss - std, loss + std, alpha=0.2,
                      color=line.get_color())
  # The last model drawn is Switch: where its mean curve reaches dense's end.
  reach = report.first_crossing(steps, loss, dense_final)
  left.axhline(dense_final, color="gray", linestyle=":", linewidth=1)
  left.axvline(reach, color="gray", linestyle=":", linewidth=1)
  left.annotate("dense's final loss at step %d\n(%.2fx fewer steps)"
                % (reach, steps[-1] / reach), (reach, dense_final),
                xytext=(150, dense_final - 0.2),
                arrowprops=dict(arrowstyle="->", color="gray"))
  left.set_ylim(dense_final - 0.25, dense_final + 1.0)
  left.set_xlabel("training steps (batch 16 x 128 tokens)")
  left.set_ylabel("validation loss (nats per token)")
  left.set_title("Switch against its FLOP-matched dense twin")
  left.legend()

  counts = [n for n, _ in LADDER]
  finals = [report.final_loss(runs(model)) for _, model in LADDER]
  right.errorbar(counts, [f for f, _ in finals], yerr=[s for _, s in finals],
                 marker="o", capsize=4, label="Switch (capacity factor 1.25)")
  right.axhline(dense_final, color="gray", linestyle="--", label="dense")
  right.axhspan(dense_final - dense_std, dense_final + dense_std,
                color="gray", alpha=0.2)
  right.set_xscale("log", base=2)
  right.set_xticks(counts)
  right.set_xticklabels([str(n) for n in counts])
  right.set_xlabel("experts")
  right.set_title("Final loss by expert count (mean +- std, 3 seeds)")
  right.legend()
  for ax in (left, right):
    ax.grid(alpha=0.3)
  fig.suptitle("Decoder-only LM on the offline code corpus, d_model 128, "
               "4 layers, 2000 steps (docs/studies/experts_1x)", fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  fig.savefig(OUT, dpi=100)
  print(OUT)


if __name__ == "__main__":
  sys.exit(main())
