"""The demo script (examples/demo.py): its files, and the discrete ablation it runs.

The Pendulum population and the CartPole ablation run at a small size; the
test checks every file the demo promises and the numbers in them: the
summary's final returns and alphas are the history's last row, and under
Velora's negative target alpha fell at every update of the ablation.
"""

import json
import os

import numpy as np
import pytest

from examples import demo


@pytest.mark.slow
def test_demo_writes_its_files_and_the_ablation(tmp_path, capsys):
  out = str(tmp_path)
  demo.main(["--out", out, "--members", "2", "--steps", "2000", "--chunk", "500", "--ablation-steps", "2000"])
  for name in ("return.png", "alpha.png", "entropy.png", "discrete_targets.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  with np.load(os.path.join(out, "history.npz")) as f:
    history = dict(f)
  np.testing.assert_allclose(summary["final_return"], history["return"][-1])
  np.testing.assert_allclose(summary["final_alpha"], history["alpha"][-1])
  assert summary["members_at_bar"] == int(np.sum(history["return"][-1] >= demo.RETURN_BAR))
  printed = capsys.readouterr().out
  # Velora's row of the ablation table: alpha fell at all 2 x 500 updates, rose at none.
  velora = next(line for line in printed.splitlines() if line.lstrip().startswith("Velora"))
  assert velora.split()[3:5] == ["1000", "0"], velora
  assert "Demo done" in printed


def test_script_has_help(capsys):
  with pytest.raises(SystemExit) as e:
    demo.main(["--help"])
  assert e.value.code == 0
  assert "--ablation-steps" in capsys.readouterr().out
