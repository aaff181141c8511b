"""Sweep configs: expansion into points, and errors that name the key and its line."""

from __future__ import annotations

import json
import re

import pytest

from suite.config import CONFIG_DIR, build_config, config_from_json, load_config, parse_bytes
from suite.plugin.errors import UsageError

BASE = """\
name = "t"
problems = ["gd"]
backends = ["unrolled", "ift-cg"]
frameworks = ["torch", "jax"]
repeats = 2

[[grid]]
n = [10]
K = [10, 100]

[[grid]]
n = [10, 20]
K = [100]
"""


def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_points_are_deduplicated_and_run_K_upwards(tmp_path):
    config = load_config(str(_write(tmp_path, BASE)))
    points = config.points()
    # 2 backends × 2 frameworks × {(10,10), (10,100), (20,100)}: (10,100) appears in both grids
    assert len(points) == 12
    assert len({p.key() for p in points}) == 12
    series = [p for p in points if p.backend == "unrolled" and p.framework == "torch" and p.n == 10]
    assert [p.K for p in series] == [10, 100]
    assert points[0].backend == "unrolled"  # registry order: exact strategies first


def test_backend_option_lists_are_grids(tmp_path):
    config = load_config(str(_write(tmp_path, BASE + '\n[options.ift-cg]\ntol = [1e-6, 1e-10]\n')))
    cg = [p for p in config.points() if p.backend == "ift-cg"]
    assert sorted({p.options["tol"] for p in cg}) == [1e-10, 1e-6]
    assert all(not p.options for p in config.points() if p.backend == "unrolled")


@pytest.mark.parametrize("extra, where", [
    ("bogus = 3\n", ":1: bogus"),
    ('\n[options.ift-cg]\ntol = "fast"\n', ":16: options.ift-cg.tol"),
    ("\n[options.ift-cg]\nmaxiter = 0\n", ":16: options.ift-cg.maxiter"),
    ("\n[options.ift-cg]\nsnapshots = 3\n", ":16: options.ift-cg.snapshots"),
    ("\n[options.nosuch]\nk = 3\n", ":15: options.nosuch"),
])
def test_errors_name_the_key_and_its_line(tmp_path, extra, where):
    text = extra + BASE if extra.startswith("bogus") else BASE + extra
    with pytest.raises(UsageError) as err:
        load_config(str(_write(tmp_path, text)))
    assert where in str(err.value)


@pytest.mark.parametrize("key, value, where", [
    ("repeats", "0", ":5: repeats"),
    ("backends", '["unrolled", "magic"]', ":3: backends"),
])
def test_bad_values_name_the_line(tmp_path, key, value, where):
    text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line
                     for line in BASE.splitlines())
    with pytest.raises(UsageError) as err:
        load_config(str(_write(tmp_path, text)))
    assert where in str(err.value)


def test_bad_grid_value_names_the_grid_and_line(tmp_path):
    with pytest.raises(UsageError) as err:
        load_config(str(_write(tmp_path, BASE.replace("K = [100]", "K = [100, -1]"))))
    assert ":13: grid[1].K" in str(err.value)


def test_bundled_configs_load():
    for name in ("default", "quick"):
        assert load_config(name).points()


def test_parse_bytes():
    assert parse_bytes("8GiB") == 8 * 2**30
    assert parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes(1234) == 1234
    assert parse_bytes(None) is None and parse_bytes("none") is None
    with pytest.raises(UsageError, match="memory_cap"):
        parse_bytes("lots")


def test_missing_grid_is_an_error():
    with pytest.raises(UsageError, match="grid"):
        build_config({"problems": ["gd"], "backends": ["unrolled"], "frameworks": ["torch"]},
                     name="x")


GRID_OPTIONS = """\
name = "t"
problems = ["qp", "savi"]
backends = ["unrolled"]
frameworks = ["jax"]

[[grid]]
n = [4]
K = [10]
options = { solver = "admm" }

[[grid]]
problems = ["savi"]
n = [2]
K = [10, 20]
options = { wrt = "encoder" }

[options]
batch = 2
"""


def test_grid_options_override_the_config_options_for_that_grid_only(tmp_path):
    points = load_config(str(_write(tmp_path, GRID_OPTIONS))).points()
    by = {(p.problem, p.n, p.K): p.options for p in points}
    assert by[("qp", 4, 10)] == {"batch": 2, "solver": "admm"}
    assert by[("savi", 4, 10)] == {"batch": 2}  # solver is not a savi option
    assert by[("savi", 2, 20)] == {"batch": 2, "wrt": "encoder"}
    assert len(points) == 4


@pytest.mark.parametrize("old, new, field", [
    ('solver = "admm"', 'solver = "adm"', "grid[0].options.solver"),
    ('wrt = "encoder"', 'wrt = ["encoder"]', "grid[1].options"),
    ("batch = 2", "batch = 0", "options.batch"),
    ('solver = "admm"', 'snapshots = 3', "grid[0].options.snapshots"),
])
def test_bad_grid_or_config_option_names_the_key(tmp_path, old, new, field):
    with pytest.raises(UsageError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_config(str(_write(tmp_path, GRID_OPTIONS.replace(old, new))))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
def test_meta_json_round_trips_every_shipped_config(name):
    """What a run writes into meta.json rebuilds the identical config (per-grid options kept
    as a table: they used to come back as a list of their keys)."""
    config = load_config(name)
    rebuilt = config_from_json(json.loads(json.dumps(config.to_json())))
    assert rebuilt == config
    assert [p.key() for p in rebuilt.points()] == [p.key() for p in config.points()]


def test_default_config_grid_options_survive_meta_json():
    payload = json.loads(json.dumps(load_config("default").to_json()))
    tables = [g["options"] for g in payload["grids"] if g["options"] is not None]
    assert {"solver": "admm"} in tables  # the qp grid: a table, not ["solver"]


HOSTILE = [  # (line to add or replace, the field the one-line message must name)
    ('problems = [["gd"]]', "c.toml:2: problems"),
    ("options = 5", "options"),
    ("grid = [1, 2]", "grid[0]"),
    ('pair_with = ["x"]', "pair_with"),
    ("repeats = true", "repeats"),
    ("repeats = 2.5", "repeats"),
    ("threads = true", "threads"),
    ("threads = 999", "threads"),
    ("timeout_s = nan", "timeout_s"),
    ("timeout_s = inf", "timeout_s"),
    ("timeout_s = -1", "timeout_s"),
    ('timeout_s = "10min"', "timeout_s"),
    ("memory_cap = -1", "memory_cap"),
    ('memory_cap = "-1GiB"', "memory_cap"),
    ("memory_cap = true", "memory_cap"),
    ('name = "../../../escape"', "name"),
    ('name = "a/b"', "name"),
    ('name = "/abs"', "name"),
    ('name = ".hidden"', "name"),
    ('name = ""', "name"),
    ("name = 5", "name"),
    ("description = [1]", "description"),
    ("seeds = [-1]", "seeds"),
    ("seeds = [true]", "seeds"),
]


@pytest.mark.parametrize("line, field", HOSTILE)
def test_hostile_top_level_values_are_one_line_naming_the_field(tmp_path, line, field):
    key = line.split(" =")[0]
    lines = [row for row in BASE.splitlines() if not row.startswith(f"{key} =")]
    text = line + "\n" + "\n".join(lines) if key not in ("problems",) else BASE.replace(
        'problems = ["gd"]', line)
    if key == "grid":  # replace the [[grid]] tables by a list of integers
        text = line + "\n" + BASE.split("[[grid]]")[0]
    with pytest.raises(UsageError) as err:
        load_config(str(_write(tmp_path, text)))
    message = str(err.value)
    assert field in message and "\n" not in message and "allowed:" in message


@pytest.mark.parametrize("extra, field", [
    ("\n[options.ift-cg]\ntol = nan\n", "options.ift-cg.tol"),
    ("\n[options.ift-cg]\ntol = inf\n", "options.ift-cg.tol"),
    ("\n[options.ift-cg]\ntol = []\n", "options.ift-cg.tol"),
    ("\n[options.ift-cg]\nmaxiter = true\n", "options.ift-cg.maxiter"),
    ("\n[options]\nmomentum = nan\n", "options.momentum"),
])
def test_nan_inf_booleans_and_empty_grids_in_options_are_rejected(tmp_path, extra, field):
    with pytest.raises(UsageError, match=re.escape(field)):
        load_config(str(_write(tmp_path, BASE + extra)))


def test_n_and_K_have_upper_bounds(tmp_path):
    with pytest.raises(UsageError, match=r"grid\[0\]\.K.*to 10000000"):
        load_config(str(_write(tmp_path, BASE.replace("K = [10, 100]", "K = [100000000]"))))
    with pytest.raises(UsageError, match=r"grid\[0\]\.n.*to 100000"):
        load_config(str(_write(tmp_path, BASE.replace("n = [10]\n", "n = [1000000]\n", 1))))


def test_config_paths_that_cannot_be_read_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="--config.*is a directory"):
        load_config(str(tmp_path))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff"\n')
    with pytest.raises(UsageError, match="--config.*not UTF-8"):
        load_config(str(bad))
    with pytest.raises(UsageError, match="--config"):
        load_config("")


@pytest.mark.parametrize("payload, field", [
    ([1, 2], "meta.json: config"),
    ({"name": "x"}, "config.problems"),
    ({"name": "x", "problems": ["gd"], "backends": ["unrolled"], "frameworks": ["torch"],
      "grids": {"n": 1}}, "config.grids"),
    ({"name": "x", "problems": ["gd"], "backends": ["unrolled"], "frameworks": ["torch"],
      "grids": [{"n": [5], "K": [5]}], "settings": {"threads": "x"}}, "config.threads"),
])
def test_damaged_meta_json_config_names_the_key(payload, field):
    with pytest.raises(UsageError, match=re.escape(field)):
        config_from_json(payload)


PAIRED = """\
name = "p"
problems = ["gd"]
backends = ["ift-cg"]
frameworks = ["jax"]

[[grid]]
backends = ["ift-cg", "jaxopt-cg", "jaxopt-gmres"]
n = [10]
K = [100]
pair_with = "counterpart"

[[grid]]
backends = ["ift-direct"]
n = [10]
K = [100]
pair_with = "unrolled"

[[grid]]
n = [20]
K = [100]
"""


def test_a_grid_pairs_its_points_and_counterpart_pairs_each_peer_with_ours(tmp_path):
    config = load_config(str(_write(tmp_path, PAIRED)))
    grid_settings = config.grid_settings()
    paired = {p.backend + f"@{p.n}": config.settings_for(p, grid_settings).pair_with
              for p in config.points()}
    assert paired == {"ift-cg@10": None, "jaxopt-cg@10": "ift-cg",
                      "jaxopt-gmres@10": "ift-gmres", "ift-direct@10": "unrolled",
                      "ift-cg@20": None}
    assert config_from_json(json.loads(json.dumps(config.to_json()))) == config


def test_a_bad_grid_pair_with_names_the_grid_and_the_allowed_values(tmp_path):
    with pytest.raises(UsageError) as err:
        load_config(str(_write(tmp_path, PAIRED.replace('"unrolled"', '"unroled"'))))
    assert "grid[1].pair_with" in str(err.value) and "counterpart" in str(err.value)


TIMED = """
name = "t"
problems = ["gd"]
backends = ["unrolled"]
frameworks = ["torch"]
timeout_s = 60

[[grid]]
n = [10]
K = [100]

[[grid]]
n = [2000]
K = [100]
timeout_s = 900
"""


def test_a_grid_timeout_applies_to_its_points_only_and_round_trips(tmp_path):
    config = load_config(str(_write(tmp_path, TIMED)))
    timeouts = {p.n: config.settings_for(p).timeout_s for p in config.points()}
    assert timeouts == {10: 60.0, 2000: 900.0}
    assert config_from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize("bad", ["0", "-5", '"long"'])
def test_a_bad_grid_timeout_names_the_grid(tmp_path, bad):
    with pytest.raises(UsageError) as err:
        load_config(str(_write(tmp_path, TIMED.replace("timeout_s = 900", f"timeout_s = {bad}"))))
    assert "grid[1].timeout_s" in str(err.value)


def test_a_grid_repeats_applies_to_its_points_only_and_round_trips(tmp_path):
    config = load_config(str(_write(tmp_path, TIMED.replace("repeats = 1\n", "")
                                    .replace("timeout_s = 60", "timeout_s = 60\nrepeats = 5")
                                    .replace("timeout_s = 900", "timeout_s = 900\nrepeats = 1"))))
    repeats = {p.n: config.settings_for(p).repeats for p in config.points()}
    assert repeats == {10: 5, 2000: 1}
    assert config_from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize("bad", ["0", "-1", "2.5", '"few"'])
def test_a_bad_grid_repeats_names_the_grid(tmp_path, bad):
    with pytest.raises(UsageError) as err:
        load_config(str(_write(tmp_path, TIMED.replace("timeout_s = 900",
                                                       f"timeout_s = 900\nrepeats = {bad}"))))
    assert "grid[1].repeats" in str(err.value)
