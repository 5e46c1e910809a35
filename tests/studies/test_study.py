"""Study configuration: its checks, and run dirs bound to one configuration."""
import glob
import os

import helpers
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.studies import run_study
from mtf_switch.studies import study as study_lib


def _study():
  return study_lib.Study(name="s", models={"dense": [], "switch": []},
                         seeds=[1, 2], steps=400, eval_every=100)


def test_bad_studies_are_refused():
  with pytest.raises(ValueError, match=r"baseline 'dense' .* \['switch'\]"):
    study_lib.Study(name="s", models={"switch": []})
  with pytest.raises(ValueError, match=r"eval_every=300 must divide "
                     r"steps=1000"):
    study_lib.Study(name="s", models={"dense": []}, steps=1000,
                    eval_every=300)
  models = {"dense": [], "switch": [], "student": []}
  for teachers in ({"student": "switch_8"}, {"pupil": "switch"}):
    with pytest.raises(ValueError, match=r"teachers .*: a run and the run it "
                       r"starts from must both be among the models"):
      study_lib.Study(name="s", models=models, teachers=teachers)
  # A run starts from one other, which starts from none.
  with pytest.raises(ValueError, match=r"upcycle_from .* starts from one "
                     r"other at most"):
    study_lib.Study(name="s", models=models, teachers={"student": "switch"},
                    upcycle_from={"student": "dense"})
  for starts in (dict(teachers={"student": "switch", "switch": "dense"}),
                 dict(upcycle_from={"switch": "dense"},
                      continue_from={"student": "switch"})):
    with pytest.raises(ValueError, match=r"\['student'\] start from runs "
                       r"that start from others"):
      study_lib.Study(name="s", models=models, **starts)


def test_a_students_run_config_holds_its_teachers():
  study = study_lib.Study(name="s", models={"dense": [], "switch": ["a"],
                                            "student": ["a"]},
                          teachers={"student": "switch"})
  config = study_lib.run_config(study, "student", 2)
  assert config["teacher"] == study_lib.run_config(study, "switch", 2)
  assert "teacher" not in study_lib.run_config(study, "switch", 2)


def test_an_upcycled_runs_config_holds_its_sources():
  study = study_lib.Study(name="s", models={"dense": [], "switch": ["a"],
                                            "more": []},
                          upcycle_from={"switch": "dense"},
                          continue_from={"more": "dense"})
  dense = study_lib.run_config(study, "dense", 1)
  assert study_lib.run_config(study, "switch", 1)["upcycled_from"] == dense
  assert study_lib.run_config(study, "more", 1)["continued_from"] == dense
  assert study.quick().sources == {"switch": "dense", "more": "dense"}


def test_a_run_dir_of_another_configuration_is_refused(tmp_path):
  study = _study()
  run_dir = str(tmp_path / "switch-seed1")
  study_lib.check_run_dir(run_dir, study_lib.run_config(study, "switch", 1))
  study_lib.check_run_dir(run_dir, study_lib.run_config(study, "switch", 1))
  study.steps = 800
  with pytest.raises(ValueError, match=r"switch-seed1 holds a run of another "
                     r"configuration \(steps differ\); remove"):
    study_lib.check_run_dir(run_dir, study_lib.run_config(study, "switch", 1))


def test_learning_rate_decays_linearly_over_the_last_fraction():
  steps, fraction = 400, 0.25
  decayed = study_lib.Study(name="s", models={"dense": []}, steps=steps,
                            eval_every=100, learning_rate=0.02,
                            decay_fraction=fraction)
  constant = study_lib.Study(name="s", models={"dense": []}, steps=steps,
                             eval_every=100, learning_rate=0.02)
  at = [0, 200, 300, 350, 399, 400]
  with tf.Graph().as_default(), tf.Session() as sess:
    got = sess.run([decayed.learning_rate_at(s) for s in at])
    flat = sess.run([constant.learning_rate_at(s) for s in at])
  # numpy: 0.02 until 300, then a straight line to 0 at step 400.
  want = [0.02 * min(1.0, (steps - s) / (fraction * steps)) for s in at]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(flat, [0.02] * len(at), rtol=1e-6)
  with pytest.raises(ValueError, match=r"decay_fraction=1.5 must be in "
                     r"\[0, 1\]"):
    study_lib.Study(name="s", models={"dense": []}, decay_fraction=1.5)


_STUDIES = sorted(glob.glob(os.path.join(helpers.REPO, "gin", "studies",
                                          "[!_]*.gin")))


@pytest.mark.parametrize("study_file", _STUDIES, ids=os.path.basename)
def test_a_shipped_study_loads_and_its_models_configs_parse(study_file):
  study = run_study.load_study(study_file, quick=False)
  for model in study.models:
    study_lib.parse_model_config(study.models[model])


def test_a_curve_shared_by_two_studies_comes_from_one_configuration():
  # Studies reuse runs by copying curves between docs/studies/<name>/curves;
  # the runner then skips them.  A copy is only honest if both studies
  # would have trained that run with the same configuration.
  configs = {}  # curve content -> (study, run config)
  shared = 0
  for study_file in _STUDIES:
    study = run_study.load_study(study_file, quick=False)
    for model, seed in study.runs():
      path = os.path.join(helpers.REPO, study_lib.curve_path(
          os.path.join("docs", "studies", study.name), model, seed))
      if not os.path.exists(path):
        continue
      with open(path) as f:
        content = f.read()
      config = study_lib.run_config(study, model, seed)
      if content in configs:
        shared += 1
        other_study, other_config = configs[content]
        assert config == other_config, (
            "%s and %s share the curve of %s-seed%d but configure it "
            "differently" % (other_study, study.name, model, seed))
      configs[content] = (study.name, config)
  assert shared >= 10  # the decay study's runs are copied into several
