"""Packaging: the npe2 manifest validates, and a built wheel carries the manifest and the CLI."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_manifest_validates():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    out = subprocess.run([npe2, "validate", "napari-refsam"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_wheel_carries_manifest_weights_and_entry_points(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("napari_refsam-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = archive.read("napari_refsam/napari.yaml")
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert manifest == (ROOT / "napari.yaml").read_bytes()  # a real copy of the single source
    assert "src_model/modeling/refsam.py" in names and "napari_refsam/_widget.py" in names
    for bundled in (ROOT / "src_model" / "weights").glob("*.safetensors"):
        assert f"src_model/weights/{bundled.name}" in names
    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    assert parser["napari.manifest"]["napari-refsam"] == "napari_refsam:napari.yaml"
    assert parser["console_scripts"]["refsam"] == "src_model.cli:main"

    from npe2 import PluginManifest

    extracted = tmp_path / "napari.yaml"
    extracted.write_bytes(manifest)
    parsed = PluginManifest.from_file(extracted)
    assert parsed.name == "napari-refsam"
    assert any(w.display_name == "RefSAM" for w in parsed.contributions.widgets)
    assert any(s.display_name == "Synthetic referring video" for s in parsed.contributions.sample_data)
