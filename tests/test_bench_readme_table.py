"""bench/readme_table.py: the README's tables, means over seeds with the best of each row in bold."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
_spec = importlib.util.spec_from_file_location("readme_table", BENCH / "readme_table.py")
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)


def test_readme_tables_average_seeds_and_bold_the_best():
    readme_tables = rt.readme_tables

    def rec(method, seed, pcc, top, dataset="dlpfc", protocol="R"):
        return {"dataset": dataset, "section": "s1", "protocol": protocol, "method": method, "seed": seed,
                "pcc": pcc, "pcc_top50": top, "mse": 0.3, "mae": 0.1, "ari": 0.2 if dataset == "dlpfc" else None}

    recs = [rec("knn", 0, 0.10, 0.50), rec("knn", 1, 0.20, 0.50), rec("histosge", 0, 0.12, 0.40),
            rec("histosge", 1, 0.12, 0.40), rec("ridge", 0, 0.05, 0.1, dataset="her2st", protocol="X")]
    lines = readme_tables(recs)
    row = next(line for line in lines if line.startswith("| dlpfc/s1 | R |"))
    # knn's pcc averages to 0.150 and is best; histosge's top-50 is not, knn's 0.500 is
    assert row == "| dlpfc/s1 | R | **0.150** / **0.500** / 0.300 / 0.20 | 0.120 / 0.400 / 0.300 / 0.20 |"
    assert "| section | protocol | knn | histosge |" in lines
    assert "| her2st/s1 | X | **0.050** / **0.100** / 0.300 |" in lines  # no ARI cell outside DLPFC
