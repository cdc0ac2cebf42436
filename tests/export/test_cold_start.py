"""Cold-start items end to end, on planted synthetic data (taste clusters whose items carry
their cluster's tags):

* a user's own split that holds back every interaction of some items: with item features
  (``data.features_from``) those items stay in the catalogue, are learnt through the feature
  prior alone, exported, and recommended to the users whose cluster their tags name;
* ``export/export.py --new_items=FILE`` adds items that were never in the data: the new
  version's ``similar_items`` puts them next to the items that share their tags, and
  ``serving_default`` recommends them to that cluster's users.
"""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from export_helpers import REPO

from cml_tf import export, train
from cml_tf.config import get_config
from cml_tf.data.features import NewItemsError
from cml_tf.data.split import split_per_user
from cml_tf.data.synthetic import make_synthetic, planted_labels
from cml_tf.serving.spec import spec_from_model

pytestmark = pytest.mark.slow

SYNTHETIC = dict(n_users=400, n_items=300, n_clusters=6, mean_per_user=15.0, seed=3,
                 tags_per_item=8, tags_per_cluster=8, feature_noise=0.05)
K = 20


def frame(data, matrix):
    m = matrix.tocoo()
    return pd.DataFrame({"user": data.user_ids[m.row], "item": data.item_ids[m.col]})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A CML+F run on a user split in which 15 items have no training or validation
    interaction (all of theirs moved to the test file)."""
    folder = tmp_path_factory.mktemp("cold")
    data = make_synthetic(**SYNTHETIC)
    split = split_per_user(data, seed=0)
    held = data.item_ids[np.random.default_rng(0).choice(
        np.flatnonzero(data.item_counts() >= 8), 15, replace=False)]
    parts = {part: frame(data, getattr(split, part).matrix) for part in ("train", "valid", "test")}
    moved = pd.concat([parts[p][parts[p]["item"].isin(held)] for p in ("train", "valid")])
    for part in ("train", "valid"):
        parts[part] = parts[part][~parts[part]["item"].isin(held)]
    parts["test"] = pd.concat([parts["test"], moved])
    for part, table in parts.items():
        table.to_csv(folder / f"{part}.csv", index=False)

    config = get_config()
    config.data.synthetic.update(**SYNTHETIC)
    config.data.update(train_path=str(folder / "train.csv"), valid_path=str(folder / "valid.csv"),
                       test_path=str(folder / "test.csv"), use_features=True,
                       features_from="synthetic")
    config.model.update(dim=16, margin=0.5, lambda_f=30.0, hidden=64, dropout=0.0,
                        init_items_from_features=True)
    config.train.update(epochs=20, batch_size=512, eval_every=10, verbose=0)
    config.viz.enabled = False
    config.export.update(index="brute_force", k=K, report_users=50, report_queries=5)
    metrics = train.train_and_evaluate(config, str(folder / "workdir"))
    return folder / "workdir", metrics, held, parts


def clusters():
    item_cluster, user_home, _ = planted_labels(**SYNTHETIC)
    return ({f"i{j}": int(c) for j, c in enumerate(item_cluster)},
            {f"u{u}": int(c) for u, c in enumerate(user_home)})


def hit_rates(model, items, cluster_of, user_home, users):
    """Fraction of (item, user) pairs with the item in the user's top-K, for the users of the
    item's cluster and for everyone else."""
    out = model.signatures["serving_default"](user_id=tf.constant(users))
    tops = [set(b.decode() for b in row) for row in out["item_ids"].numpy()]
    own, other = [], []
    for item in items:
        for user, top in zip(users, tops):
            (own if user_home[user] == cluster_of[item] else other).append(item in top)
    return np.mean(own), np.mean(other)


def test_items_without_training_interactions_are_in_the_export_and_recommended(run):
    workdir, metrics, held, parts = run
    assert metrics["data"]["items"] == 300           # the catalogue: every item with features
    assert metrics["data"]["items_without_training_interactions"] >= len(held)
    assert metrics["test"]["unseen_items"] == 0       # held-out pairs are all rankable
    export = metrics["export"]["path"]
    catalogue = (pathlib.Path(export) / "assets" / "item_ids.txt").read_text().split("\n")
    assert set(held) <= set(catalogue)
    cluster_of, user_home = clusters()
    model = tf.saved_model.load(export)
    users = sorted(user_home)
    own, other = hit_rates(model, held, cluster_of, user_home, users)
    assert own >= 0.1 and own >= 5 * other, (own, other)
    # ... and the test users who liked them find some of them in their top-K.
    test = parts["test"][parts["test"]["item"].isin(held)]
    out = model.signatures["serving_default"](user_id=tf.constant(sorted(set(test["user"]))))
    tops = {u: set(b.decode() for b in row)
            for u, row in zip(sorted(set(test["user"])), out["item_ids"].numpy())}
    hits = np.mean([item in tops[user] for user, item in zip(test["user"], test["item"])])
    assert hits >= 2 * K / 300, hits


def test_new_items_join_the_index_next_to_their_feature_neighbours(run, tmp_path):
    workdir, _, _, _ = run
    cluster_of, user_home = clusters()
    rng = np.random.default_rng(5)
    rows, new = [], {}
    for c in range(SYNTHETIC["n_clusters"]):
        for n in range(2):
            item = f"new-{c}-{n}"
            new[item] = c
            tags = rng.choice(SYNTHETIC["tags_per_cluster"], 6, replace=False)
            rows += [(item, f"c{c}_tag{t}") for t in tags] + [(item, "a tag nobody knows")]
    pd.DataFrame(rows, columns=["item", "feature"]).to_csv(tmp_path / "new.csv", index=False)
    done = subprocess.run(
        [sys.executable, str(REPO / "export" / "export.py"), f"--workdir={workdir}",
         f"--new_items={tmp_path / 'new.csv'}", "--index=brute_force", "--report_users=50",
         "--report_queries=5"], capture_output=True, text=True, timeout=600, check=False,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 new items" in done.stdout and f"exported {workdir / 'saved_model' / '2'}" in \
        done.stdout
    report = json.loads((workdir / "saved_model" / "2" / "assets.extra" /
                         "index_report.json").read_text())
    assert report["new_items"] == 12 and report["n_items"] == 312
    model = tf.saved_model.load(str(workdir / "saved_model" / "2"))
    out = model.signatures["similar_items"](item_id=tf.constant(list(new)))
    assert out["known"].numpy().all()
    neighbours = [[b.decode() for b in row[:10]] for row in out["item_ids"].numpy()]
    same = np.mean([cluster_of.get(i, new.get(i)) == new[item]
                    for item, row in zip(new, neighbours) for i in row])
    assert same >= 0.8, same                            # chance: 1/6
    trained = [i for i, c in cluster_of.items() if c == 0][:20]
    out = model.signatures["similar_items"](item_id=tf.constant(trained))
    found = [b.decode() for row in out["item_ids"].numpy() for b in row]
    ours = sum(new.get(i) == 0 for i in found)               # new items of cluster 0
    others = sum(new.get(i, 0) != 0 for i in found)           # new items of other clusters
    assert ours > 0 and ours >= 2 * others, (ours, others)
    own, other = hit_rates(model, list(new), {**cluster_of, **new}, user_home,
                           sorted(user_home))
    assert own >= 5 * other and own > 0, (own, other)


@pytest.mark.bad_input
def test_bad_new_items_are_refused_with_one_line(run, tmp_path):
    workdir = run[0]
    versions = sorted(p.name for p in (workdir / "saved_model").iterdir())
    done = subprocess.run(
        [sys.executable, str(REPO / "export" / "export.py"), f"--workdir={workdir}",
         f"--new_items={tmp_path / 'missing.csv'}"], capture_output=True, text=True,
        timeout=300, check=False, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"error: --new_items {tmp_path / 'missing.csv'} is not a file (a feature table of the "
        "items to add)"], done.stderr[-2000:]
    spec = spec_from_model(*export.restore_model(workdir)[:2])
    cases = {"item,feature\nfresh,a tag nobody knows\n": "have no feature the model knows",
             "item,feature\n fresh,c0_tag1\n": "line 2: item ' fresh' has leading or trailing",
             "item,feature,value\nfresh,c0_tag1,x\n": "value",
             "item\nfresh\n": "feature"}
    for n, (text, says) in enumerate(cases.items()):
        path = tmp_path / f"bad{n}.csv"
        path.write_text(text)
        with pytest.raises(NewItemsError, match=says):
            export.add_new_items(spec, path)
    path = tmp_path / "taken.csv"
    path.write_text(f"item,feature\n{spec.item_ids[0]},c0_tag1\n")
    with pytest.raises(ValueError, match=re.escape(f"in the catalogue, e.g. "
                                                  f"'{spec.item_ids[0]}'")):
        export.add_new_items(spec, path)
    assert sorted(p.name for p in (workdir / "saved_model").iterdir()) == versions
