"""``refsam info``: parameter accounting against the paper's counts."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

PAPER = {"vit_b": 9.9e6, "vit_l": 19.1e6, "vit_h": 33.0e6}
SAM = {"vit_b": 93.7e6, "vit_l": 312.3e6, "vit_h": 641.1e6}


@pytest.mark.parametrize("preset", ["vit_b", "vit_l", "vit_h"])
def test_info_json_matches_paper(preset, capsys):
    from src_model.cli import main

    assert main(["info", "--preset", preset, "--text-dim", "1024", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert abs(result["trainable_parameters"] / PAPER[preset] - 1) <= 0.06
    assert round(result["sam_parameters"] / 1e6, 1) == SAM[preset] / 1e6
    comps = result["components"]
    assert comps["mask_decoder"]["trainable"] == 4_058_340
    assert comps["text_mlp"]["trainable"] == 656_128
    assert comps["itm"]["trainable"] == 1_315_840
    assert comps["image_encoder"]["trainable"] == 0
    adapters = {"vit_b": 3_550_464, "vit_l": 12_613_632, "vit_h": 26_265_600}[preset]
    assert comps["adapters"]["trainable"] == adapters


def test_info_console_script_and_bad_value():
    out = subprocess.run([sys.executable, "-m", "src_model.cli", "info", "--preset", "tiny"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "trainable" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "src_model.cli", "info", "--text-dim", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "--text-dim" in bad.stderr
