"""Parameters are typed and checked, with errors naming the parameter and the allowed values."""

from __future__ import annotations

import pytest

from nnvis_core.contract.params import Param, ParamError, parse_assignments, resolve_params
from nnvis_core.run.config import ConfigError, read_config_file

DECLARED = (
    Param("window", int, 9, minimum=1, maximum=64),
    Param("sigma", float, 0.15, minimum=0.0),
    Param("squared", bool, False),
    Param("baseline", str, "black", choices=("black", "blur", "noise")),
)


def test_defaults_and_coercion_from_strings():
    values = resolve_params("occ", DECLARED, {"window": "32", "sigma": "0.5", "squared": "yes", "baseline": "blur"})
    assert values == {"window": 32, "sigma": 0.5, "squared": True, "baseline": "blur"}
    assert resolve_params("occ", DECLARED, {}) == {"window": 9, "sigma": 0.15, "squared": False, "baseline": "black"}


def test_toml_values_keep_their_types():
    assert resolve_params("occ", DECLARED, {"window": 16, "squared": True})["window"] == 16
    with pytest.raises(ParamError):
        resolve_params("occ", DECLARED, {"window": 2.5})
    with pytest.raises(ParamError):
        resolve_params("occ", DECLARED, {"window": True})


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"window": "abc"}, "invalid value 'abc' for occ.window: expected an integer from 1 to 64"),
        ({"window": "100"}, "expected an integer from 1 to 64"),
        ({"sigma": "-1"}, "expected a number >= 0.0"),
        ({"squared": "maybe"}, "expected true or false"),
        ({"baseline": "grey"}, "expected one of black, blur, noise"),
        ({"windw": "3"}, "unknown parameter occ.windw: occ accepts baseline, sigma, squared, window"),
    ],
)
def test_errors_name_the_parameter_and_allowed_values(given, expected):
    with pytest.raises(ParamError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        resolve_params("occ", DECLARED, given)


def test_assignments_split_by_plugin():
    assert parse_assignments(["occ.window=32", "saliency.target=cat=dog"]) == {
        "occ": {"window": "32"}, "saliency": {"target": "cat=dog"}}
    for bad in ["window=3", "occ.window", ".x=1"]:
        with pytest.raises(ParamError, match="PLUGIN.PARAM=VALUE"):
            parse_assignments([bad])


def test_extra_check_runs():
    odd = Param("n", int, 1, check=lambda v: None if v % 2 else "must be odd")
    with pytest.raises(ParamError, match="must be odd"):
        odd.coerce("4", "p.n")


def test_config_file(tmp_path):
    path = tmp_path / "nnvis.toml"
    path.write_text('model = "demo"\nplugins = ["saliency"]\n[params.saliency]\ntarget = "true"\n')
    assert read_config_file(path)["params"] == {"saliency": {"target": "true"}}
    path.write_text('modle = "demo"\n')
    with pytest.raises(ConfigError, match="unknown setting 'modle'"):
        read_config_file(path)
    path.write_text('batch_size = "big"\n')
    with pytest.raises(ConfigError, match="batch_size"):
        read_config_file(path)
    path.write_text("model = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_config_file(path)
