"""The installed package ships every subpackage and the connectome data."""

import importlib.resources
import pathlib
import sys

import spikelearn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"spikelearn"} | {
        "spikelearn." + ".".join(p.parent.relative_to(ROOT / "spikelearn").parts)
        for p in (ROOT / "spikelearn").rglob("__init__.py")
        if p.parent != ROOT / "spikelearn"
    }
    assert found <= listed, f"subpackages missing from pyproject packages: {found - listed}"


def test_connectome_data_is_package_data():
    root = importlib.resources.files("spikelearn._connectome_data")
    for folder, f in [("celegans_varshney2011", "varshney2011_edges.csv"),
                      ("mouse_v1_celltype_connectivity", "em_pmax_v1dd.csv"),
                      ("drosophila_optic_lobe_flyvis", "edges_offsets.csv")]:
        assert (root / folder / f).is_file()
        assert (root / folder / "README.md").is_file()


def test_version():
    assert spikelearn.__version__.count(".") == 2


def test_connectomes_load_from_a_source_checkout_without_install(tmp_path):
    """A checkout used through PYTHONPATH (no `pip install`, so no spikelearn._connectome_data package) reads the
    connectomes/ folder beside spikelearn/ and gives the same circuit as the installed package data."""
    import os
    import subprocess

    import numpy as np

    from spikelearn.circuit import connectomes

    code = (
        "import sys, numpy as np; import spikelearn.circuit.connectomes as c\n"
        f"assert c.__file__.startswith({str(ROOT)!r}), c.__file__\n"
        "c._DATA_PACKAGE = 'spikelearn._no_such_data_package'\n"  # as if not installed
        "w = c.load('mouse_v1', n=60, seed=3).weights(dense=True)\n"
        "np.save(sys.argv[1], w)\n"
    )
    out = tmp_path / "w.npy"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, cwd="/")
    expected = connectomes.load("mouse_v1", n=60, seed=3).weights(dense=True)
    np.testing.assert_array_equal(np.load(out), expected)
