import json

import pytest

from compiler.chip import PICORE64, load_spec
from compiler.errors import SpecError


def test_picore64_numbers():
    s = PICORE64
    assert s.cores_per_chip == 64
    assert [s.neurons_per_core(w, 0) for w in (1, 2, 4, 8)] == [1024, 512, 256, 128]
    assert s.axons_per_core(3) == 8192
    assert s.weight_range(1) == (0, 1) and s.weight_range(4) == (-8, 7)
    assert s.weight_range(8) == (-128, 127)
    assert s.membrane_range == (-(1 << 23), (1 << 23) - 1)
    assert s.lcn_for_fanin(1024) == 0 and s.lcn_for_fanin(1025) == 1 and s.lcn_for_fanin(5000) == 3
    # LCN up to 64X (PAICORE's LCN_64X): 65536 axons and 1024 / (w * 64) neurons
    assert s.max_lcn == 6 and s.axons_per_core(6) == 65536 and s.lcn_for_fanin(65536) == 6
    assert [s.neurons_per_core(w, 6) for w in (1, 2, 4, 8)] == [16, 8, 4, 2]


def test_load_builtin_and_files(tmp_path):
    assert load_spec("picore64") is PICORE64
    p = tmp_path / "tiny.toml"
    p.write_text('name = "tiny"\nmesh_x = 2\nmesh_y = 2\nxbar_rows = 64\nxbar_cols = 64\n')
    s = load_spec(p)
    assert (s.name, s.mesh_x, s.xbar_cols, s.route_entries) == ("tiny", 2, 64, 4096)
    assert s.digest() != PICORE64.digest()
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"chip": {"e_sop_pj": 3, "weight_widths": [4, 8]}}))
    s2 = load_spec(j)
    assert s2.e_sop_pj == 3.0 and s2.weight_widths == (4, 8)


@pytest.mark.parametrize("text,needle", [
    ("mesh_z = 3", "unknown keys"),
    ("mesh_x = 'eight'", "must be int"),
    ("mesh_x = -1", "must be positive"),
    ("weight_widths = [3]", "weight_widths"),
    ("max_delay = 16", "max_delay"),
    ("this is not toml", "could not be parsed"),
])
def test_bad_specs(tmp_path, text, needle):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SpecError, match=needle):
        load_spec(p)


def test_missing_spec():
    with pytest.raises(SpecError, match="not found"):
        load_spec("nonexistent.toml")
