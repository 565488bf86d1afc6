"""Labels files: hp.* columns are never targets; a labels CSV inside a zoo folder uses the zoo's manifest."""

from __future__ import annotations

import json

from lolctl.zoo.format import load_zoo

HEADER = "id,path,split,rank,quality,membership[a],membership[b],noise,hp.lr,hp.noise\n"
ROWS = [
    "x0,adapters/x0,val,4,0.5,1,0,clean,0.001,0.0\n",
    "x1,adapters/x1,val,4,0.3,0,1,noisy,0.01,0.5\n",
    "x2,adapters/x2,test,4,0.1,1,1,clean,0.02,0.0\n",
]


def test_bare_csv_skips_hyperparameter_columns(tmp_path):
    (tmp_path / "labels.csv").write_text(HEADER + "".join(ROWS))
    zoo = load_zoo(tmp_path / "labels.csv")
    names = {t.name: t.kind for t in zoo.tasks}
    assert names == {"quality": "regression", "membership": "multilabel", "noise": "multiclass"}


def test_csv_inside_a_zoo_uses_the_manifest(tmp_path):
    manifest = {"tasks": [{"name": "quality", "kind": "regression", "columns": ["quality"], "labels": []}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "subset.csv").write_text(HEADER + ROWS[0] + ROWS[1])
    zoo = load_zoo(tmp_path / "subset.csv")
    assert [t.name for t in zoo.tasks] == ["quality"] and len(zoo.rows) == 2
    assert zoo.paths[0] == tmp_path / "adapters" / "x0"
