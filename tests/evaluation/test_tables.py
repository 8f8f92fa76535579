"""The Table 1 / Table 2 writers."""

from __future__ import annotations

import re

import pytest

from osdhuman.evaluation import ColumnGroup, format_value, markdown_table, rank_marks

VAL = ["dists", "lpips", "psnr_y", "ssim_y", "fid", "clipiqa", "maniqa", "musiq", "niqe"]
TEST = ["clipiqa", "maniqa", "musiq", "niqe"]
# Table 2 of the paper, rows OSEDiff* and OSDHuman, exactly as printed (PERSONA-Val then -Test)
PAPER_ROWS = {
    "OSEDiff*": "0.1476 0.2756 22.23 0.6342 17.2200 0.7034 0.6976 73.7636 3.9980 0.6874 0.7052 73.1611 4.4261",
    "OSDHUMAN": "0.1414 0.2627 22.41 0.6363 16.5987 0.7295 0.6934 76.1256 3.5750 0.7155 0.6977 73.7694 4.1287",
}


def _groups(rows: dict[str, str]) -> list[ColumnGroup]:
    val, test = {}, {}
    for name, text in rows.items():
        nums = [float(t) for t in text.split()]
        val[name] = dict(zip(VAL, nums[:9]))
        test[name] = dict(zip(TEST, nums[9:]))
    return [ColumnGroup("PERSONA-Val", VAL, val), ColumnGroup("PERSONA-Test", TEST, test)]


def _cells(table: str, row: str) -> list[str]:
    line = next(l for l in table.splitlines() if l.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_paper_numbers_render_exactly_as_printed():
    table = markdown_table(_groups(PAPER_ROWS), list(PAPER_ROWS))
    for row, text in PAPER_ROWS.items():
        plain = [re.sub(r"\*\*|</?u>", "", c) for c in _cells(table, row)]
        assert plain == text.split(), row
    # docs/reference.md prints the same numbers with 4 significant digits and no leading zero
    facts = [".1414", ".2627", "22.41", ".6363", "16.60", ".7295", ".6934", "76.13", "3.575", ".7155", ".6977", "73.77", "4.129"]
    metrics = VAL + TEST
    nums = [float(t) for t in PAPER_ROWS["OSDHUMAN"].split()]
    assert [format_value(v, m, "sig4") for v, m in zip(nums, metrics)] == facts


def test_best_and_second_follow_each_metrics_direction():
    rows = {
        "A": "0.1500 0.2000 22.00 0.6000 17.0000 0.7000 0.6900 74.0000 4.0000 0.70 0.69 73.0 4.5",
        "B": "0.1400 0.3000 23.00 0.5000 18.0000 0.6000 0.7000 76.0000 3.5000 0.71 0.70 74.0 4.0",
        "C": "0.1600 0.2500 21.00 0.7000 16.0000 0.8000 0.6800 75.0000 5.0000 0.72 0.68 72.0 4.2",
    }
    table = markdown_table(_groups(rows), list(rows))
    a, b, c = (_cells(table, r) for r in "ABC")
    # DISTS (lower better): B best, A second
    assert b[0] == "**0.1400**" and a[0] == "<u>0.1500</u>" and c[0] == "0.1600"
    # LPIPS (lower): A best, C second
    assert a[1] == "**0.2000**" and c[1] == "<u>0.2500</u>" and b[1] == "0.3000"
    # PSNR (higher): B best, A second
    assert b[2] == "**23.00**" and a[2] == "<u>22.00</u>"
    # FID (lower): C best, A second
    assert c[4] == "**16.0000**" and a[4] == "<u>17.0000</u>"
    # NIQE Val (lower): B best, A second, C plain
    assert b[8] == "**3.5000**" and a[8] == "<u>4.0000</u>" and c[8] == "5.0000"
    # Test-group MUSIQ (higher): B best, A second
    assert b[11] == "**74.0000**" and a[11] == "<u>73.0000</u>"
    assert "DISTS ↓" in table and "PSNR ↑" in table and "PERSONA-Test NIQE ↓" in table


def test_rank_marks_ties_and_missing():
    m = rank_marks({"a": 1.0, "b": 1.0, "c": 2.0, "d": float("nan")}, lower_better=True)
    assert m == {"a": "best", "b": "best", "c": "second", "d": ""}
    assert rank_marks({"a": 1.0}, lower_better=False) == {"a": "best"}


def test_unavailable_columns_are_marked_with_their_reason():
    g = ColumnGroup("", ["niqe", "musiq"], {"X": {"niqe": 3.2}}, {"musiq": "pyiqa needs musiq_koniq_ckpt-e95806b9.pth"})
    table = markdown_table([g], ["X"], row_header="Dataset", mark_second=False)
    assert _cells(table, "X") == ["**3.2000**", "n/a"]
    assert "MUSIQ: n/a, pyiqa needs musiq_koniq_ckpt-e95806b9.pth" in table
    with pytest.raises(ValueError):
        format_value(1.0, "niqe", "bogus")


def test_a_backend_other_than_the_papers_is_labelled_and_saturated_piqe_explained():
    from osdhuman.evaluation.tables import ColumnGroup, markdown_table

    values = {"A": {"brisque": 20.0, "piqe": 100.0}, "B": {"brisque": 30.0, "piqe": 40.0}}
    g = ColumnGroup("", ["brisque", "piqe"], values, records={"brisque": {"backend": "offline"},
                                                            "piqe": {"backend": "offline"}})
    table = markdown_table([g], ["A", "B"])
    assert "BRISQUE (brisque pkg) ↓" in table.splitlines()[0]
    assert "not comparable with the paper's numbers" in table
    assert "PIQE 100 is its ceiling" in table
    g_pyiqa = ColumnGroup("", ["brisque", "piqe"], {"A": {"brisque": 20.0, "piqe": 50.0}},
                          records={"brisque": {"backend": "pyiqa"}})
    plain = markdown_table([g_pyiqa], ["A"])
    assert "(brisque pkg)" not in plain and "ceiling" not in plain
