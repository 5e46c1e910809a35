"""Study configuration: its checks, and run dirs bound to one configuration."""
import pytest

from mtf_switch import study as study_lib


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


def test_a_run_dir_of_another_configuration_is_refused(tmp_path):
  study = _study()
  run_dir = str(tmp_path / "switch-seed1")
  study_lib.check_run_dir(run_dir, study_lib.run_config(study, "switch", 1))
  study_lib.check_run_dir(run_dir, study_lib.run_config(study, "switch", 1))
  study.steps = 800
  with pytest.raises(ValueError, match=r"switch-seed1 holds a run of another "
                     r"configuration \(steps differ\); remove"):
    study_lib.check_run_dir(run_dir, study_lib.run_config(study, "switch", 1))
