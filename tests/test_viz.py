"""cml_tf.viz: valid, non-blank PNGs of the right size; maps that separate planted clusters;
training curves from a fit, a callback and a workdir; projector files TensorBoard accepts."""

import json
import logging
import pathlib
import types

import numpy as np
import pytest
import scipy.sparse as sp

from cml_tf import viz
from run_helpers import write_own_split

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path, width, height):
    """A readable PNG of width x height pixels that is not a blank (single colour) image."""
    import matplotlib.image  # pylint: disable=import-outside-toplevel
    path = pathlib.Path(path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    rgb = pixels[..., :3]
    background = np.all(rgb > 0.97, axis=-1)
    assert background.mean() < 0.995, "the image is (almost) blank"
    assert rgb.std() > 0.02
    assert len(np.unique(rgb.reshape(-1, 3).round(2), axis=0)) > 10  # more than a few colours


def blobs(n_per=60, n_clusters=5, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    labels = np.repeat(np.arange(n_clusters), n_per)
    vectors = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return vectors.astype(np.float32), np.char.add("group ", labels.astype(str))


# ---- maps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding_2d_writes_a_png_with_labels_and_legend(method, tmp_path):
    vectors, labels = blobs()
    labels[:7] = viz.OTHER
    path = tmp_path / "map.png"
    figure = viz.plot_embedding_2d(vectors, labels, method=method, path=path, figsize=(6, 5),
                                   dpi=80, title="blobs")
    check_png(path, 480, 400)
    (ax,) = figure.axes
    assert ax.get_title() == "blobs"
    assert ax.get_xlabel() == ("t-SNE 1" if method == "tsne" else "PC 1")
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[0] == "other (7)"
    assert sorted(legend[1:]) == [f"group {g} ({60 - (7 if g == 0 else 0)})" for g in range(5)]
    drawn = figure.embedding_2d
    assert drawn.xy.shape == (300, 2) and list(drawn.index) == list(range(300))
    assert drawn.method == method and list(drawn.labels) == list(labels)


def test_plot_embedding_2d_subsamples_without_labels_and_draws_into_given_axes(tmp_path):
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    vectors, _ = blobs(n_per=100)
    figure = Figure(figsize=(8, 4))
    left, right = figure.subplots(1, 2)
    viz.plot_embedding_2d(vectors, method="pca", ax=left, max_points=120, seed=1)
    viz.plot_embedding_2d(vectors, method="pca", ax=right, max_points=120, seed=2)
    assert [len(m.index) for m in figure.embedding_2d_all] == [120, 120]
    assert not np.array_equal(figure.embedding_2d_all[0].index, figure.embedding_2d_all[1].index)
    assert left.get_legend() is None
    viz.save_figure(figure, tmp_path / "two.png", dpi=50)
    check_png(tmp_path / "two.png", 400, 200)


def test_project_2d_accepts_sparse_features_and_rejects_bad_input():
    features = sp.random(80, 300, density=0.05, format="csr", random_state=0)
    features.data[:] = 1.0
    assert viz.project_2d(features, "pca").shape == (80, 2)
    with pytest.raises(ValueError, match="method"):
        viz.project_2d(np.zeros((5, 3)), "umap")
    with pytest.raises(ValueError, match="NaN"):
        viz.project_2d(np.full((5, 3), np.nan), "pca")
    with pytest.raises(ValueError, match="at least 3"):
        viz.project_2d(np.zeros((2, 3)), "pca")


def test_neighbour_agreement_is_one_for_separated_groups_and_chance_for_shuffled():
    vectors, labels = blobs(spread=0.01)
    separated = viz.neighbour_agreement(viz.project_2d(vectors, "pca"), labels, k=5)
    assert separated["agreement"] > 0.99 and abs(separated["chance"] - 0.2) < 1e-9
    rng = np.random.default_rng(0)
    shuffled = viz.neighbour_agreement(rng.normal(size=(300, 2)), labels, k=5)
    assert abs(shuffled["agreement"] - 0.2) < 0.06
    with_other = labels.copy()
    with_other[:60] = viz.OTHER  # left out entirely
    assert viz.neighbour_agreement(viz.project_2d(vectors, "pca"), with_other, k=5)["points"] \
        == 240


@pytest.mark.slow
def test_map_of_a_trained_model_separates_the_planted_clusters(tmp_path):
    """The paper's Figure 5 property on data whose structure is known: items of one planted
    taste cluster end up next to each other in the 2-D t-SNE map of a trained CML."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from cml_tf.data import make_synthetic, positive_pairs_dataset, split_per_user
    from cml_tf.data.synthetic import planted_labels
    from cml_tf.models import CML

    spec = dict(n_users=1500, n_items=600, n_clusters=8, mean_per_user=20, seed=3)
    split = split_per_user(make_synthetic(**spec), seed=0)
    tf.keras.utils.set_random_seed(0)
    model = CML.from_interactions(split.train, use_features=False, dim=32, margin=0.5)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    model.fit(positive_pairs_dataset(split.train, batch_size=1024), epochs=8, verbose=0)
    clusters = np.char.add("cluster ", planted_labels(**spec)[0].astype(str))
    items = viz.popular_items(split.train, 400)
    figure = viz.plot_embedding_2d(model.item_vectors[items], clusters[items], method="tsne",
                                   path=tmp_path / "map.png")
    check_png(tmp_path / "map.png", 900, 750)
    score = viz.neighbour_agreement(figure.embedding_2d.xy, figure.embedding_2d.labels, k=10)
    assert score["chance"] < 0.15
    assert score["agreement"] > 0.8, score   # chance is ~1/8
    untrained = CML.from_interactions(split.train, use_features=False, dim=32)
    baseline = viz.neighbour_agreement(
        viz.project_2d(untrained.item_vectors[items], "tsne"), clusters[items], k=10)
    assert baseline["agreement"] < 0.3, baseline  # the structure comes from training


# ---- labels -----------------------------------------------------------------------------------


def tiny_features():
    # items x tags; tag frequencies: a=4, b=3, c=2, d=1
    rows = [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    return sp.csr_matrix(np.array(rows, np.float32)), np.array(["a", "b", "c", "d"])


def test_common_tag_labels_and_item_tags():
    features, names = tiny_features()
    assert list(viz.common_tag_labels(features, names, n_labels=4)) == \
        ["a", "a", "b", "a", "a", "other"]
    assert list(viz.common_tag_labels(features, names, n_labels=1)) == \
        ["a", "a", "other", "a", "a", "other"]
    assert list(viz.common_tag_labels(features, names, n_labels=2, ignore=["a"])) == \
        ["b", "c", "b", "other", "b", "other"]
    assert list(viz.common_tag_labels(features, names, ignore=list(names))) == ["other"] * 6
    assert viz.item_tags(features, names, [2, 5, 1], n=2) == ["b, c", "(no tags)", "a, c"]


def test_metadata_columns_popular_items_and_active_users():
    from cml_tf.data import Interactions
    features, names = tiny_features()
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0],
                                     [1, 0, 0, 1, 0, 0]], np.float32))
    train = Interactions(matrix, ["u0", "u1", "u2"], [f"i{j}" for j in range(6)],
                         item_features=features, feature_names=names)
    labels = viz.common_tag_labels(features, names)
    items = viz.item_metadata(train, labels, n_tags=1)
    assert items == {"id": [f"i{j}" for j in range(6)], "label": list(labels),
                     "tags": ["a", "a", "b", "a", "a", "(no tags)"], "likes": [3, 1, 1, 2, 0, 0]}
    users = viz.user_metadata(train, labels)
    assert users == {"id": ["u0", "u1", "u2"], "likes": [2, 3, 2], "label": ["a", "a", "a"]}
    assert list(viz.popular_items(train, 2)) == [0, 3]
    assert list(viz.active_users(train, 1)) == [1]


# ---- training curves --------------------------------------------------------------------------


def test_training_curves_from_a_history_and_a_validation_callback(tmp_path):
    history = types.SimpleNamespace(
        history={"loss": [9.0, 7.0, 6.0, 5.5], "metric_loss": [8.0, 6.5, 5.7, 5.3],
                 "feature_loss": [1.0, 0.5, 0.3, 0.2], "impostor_fraction": [0.9] * 4},
        epoch=[0, 1, 2, 3])
    callback = types.SimpleNamespace(history=[
        {"epoch": 2, "recall@50": 0.20, "recall@100": 0.27, "ndcg@50": 0.1},
        {"epoch": 4, "recall@50": 0.24, "recall@100": 0.31, "ndcg@50": 0.12}])
    figure = viz.plot_training_curves(history, callback, reference={"paper": 0.2714},
                                      path=tmp_path / "curves.png", figsize=(8, 3), dpi=100)
    check_png(tmp_path / "curves.png", 800, 300)
    left, right = figure.axes
    assert [line.get_label() for line in left.get_lines()] == \
        ["loss", "metric loss", "feature loss"]
    assert list(left.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    labels = [line.get_label() for line in right.get_lines()]
    assert labels == ["validation recall@50", "validation recall@100", "paper"]
    assert list(right.get_lines()[0].get_xdata()) == [2, 4]
    # plain dict + list inputs, and nothing at all, also draw
    viz.plot_training_curves(history.history, callback.history, metrics=["ndcg@50"])
    check = viz.plot_training_curves(None, None, path=tmp_path / "empty.png", figsize=(4, 2))
    assert len(check.axes) == 2


# ---- TensorBoard projector --------------------------------------------------------------------


def projector_client(log_dir):
    """The routes of TensorBoard's own projector plugin, reading ``log_dir``."""
    from tensorboard.plugins import base_plugin  # pylint: disable=import-outside-toplevel
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client  # pylint: disable=import-outside-toplevel
    plugin = ProjectorPlugin(base_plugin.TBContext(logdir=str(log_dir)))
    apps = plugin.get_plugin_apps()
    return lambda route, **args: Client(apps[route]).get("/", query_string=args)


def test_projector_files_open_in_tensorboards_projector_plugin(tmp_path):
    rng = np.random.default_rng(0)
    items = rng.normal(size=(30, 8)).astype(np.float32)
    users = rng.normal(size=(12, 8)).astype(np.float32)
    metadata = {"id": [f"i{j}" for j in range(30)],
                "tags": ["a\tb", "line\nbreak"] + ["t"] * 28, "likes": list(range(30))}
    config_path = viz.export_projector(tmp_path, items, users, item_metadata=metadata,
                                       users=[0, 5, 7])
    assert config_path == tmp_path / "projector_config.pbtxt"
    config = viz.read_projector_config(tmp_path)
    assert [(e.tensor_name, list(e.tensor_shape)) for e in config.embeddings] == \
        [("items", [30, 8]), ("users", [3, 8])]
    assert config.embeddings[0].tensor_path == "projector/items.tsv"

    get = projector_client(tmp_path)
    runs = get("/runs")
    assert runs.status_code == 200 and json.loads(runs.get_data()) == ["."]
    info = json.loads(get("/info", run=".").get_data())
    assert {e["tensorName"]: e["tensorShape"] for e in info["embeddings"]} == \
        {"items": [30, 8], "users": [3, 8]}
    tensor = get("/tensor", run=".", name="items")
    assert tensor.status_code == 200
    served = np.frombuffer(tensor.get_data(), np.float32).reshape(30, 8)
    np.testing.assert_allclose(served, items, rtol=1e-5, atol=1e-6)
    served_users = np.frombuffer(get("/tensor", run=".", name="users").get_data(), np.float32)
    np.testing.assert_allclose(served_users.reshape(3, 8), users[[0, 5, 7]], rtol=1e-5,
                               atol=1e-6)
    lines = get("/metadata", run=".", name="items").get_data(as_text=True).splitlines()
    assert lines[0] == "id\ttags\tlikes" and len(lines) == 31
    assert lines[1] == "i0\ta b\t0" and lines[2] == "i1\tline break\t1"
    user_lines = get("/metadata", run=".", name="users").get_data(as_text=True).splitlines()
    assert user_lines == ["0", "5", "7"]  # one column: no header line


def test_export_projector_checks_its_input(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        viz.export_projector(tmp_path, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="column 'id' has 2 values for 3"):
        viz.export_projector(tmp_path, np.zeros((3, 2)), item_metadata={"id": ["a", "b"]})


# ---- the training workdir ---------------------------------------------------------------------


def small_config():
    from cml_tf.config import get_config  # pylint: disable=import-outside-toplevel
    config = get_config()
    config.data.synthetic.update(n_users=300, n_items=200, n_clusters=5, mean_per_user=12)
    config.model.dim = 16
    # Six epochs: after three, the map's neighbours agree with the planted clusters barely
    # above chance (0.19-0.22 against 0.20), after six clearly (0.28).
    config.train.update(epochs=6, batch_size=512, eval_every=1, verbose=0)
    config.export.enabled = False
    return config


def test_train_and_evaluate_writes_the_map_curves_and_projector(tmp_path):
    from cml_tf import train  # pylint: disable=import-outside-toplevel
    workdir = tmp_path / "run"
    metrics = train.train_and_evaluate(small_config(), str(workdir))
    written = metrics["viz"]
    assert "error" not in written, written
    assert written["item_map"] == str(workdir / "item_map.png")
    check_png(workdir / "item_map.png", 900, 750)
    check_png(workdir / "training_curves.png", 1100, 400)
    agreement = written["item_map_neighbour_agreement"]
    assert 0 <= agreement["chance"] < agreement["agreement"] <= 1  # coloured by planted clusters
    assert json.loads((workdir / "metrics.json").read_text())["viz"] == written
    config = viz.read_projector_config(workdir / "tensorboard")
    assert [(e.tensor_name, list(e.tensor_shape)) for e in config.embeddings] == \
        [("items", [200, 16]), ("users", [300, 16])]
    info = json.loads(projector_client(workdir / "tensorboard")("/info", run=".").get_data())
    assert len(info["embeddings"]) == 2

    history, validation = viz.workdir_history(workdir)
    assert history["epoch"] == [1, 2, 3, 4, 5, 6] and len(history["loss"]) == 6
    assert [row["epoch"] for row in validation] == [1, 2, 3, 4, 5, 6]
    figure = viz.plot_workdir_curves(workdir, path=tmp_path / "again.png")
    check_png(tmp_path / "again.png", 1100, 400)
    assert len(figure.axes[0].get_lines()) >= 2


def test_viz_can_be_turned_off(tmp_path):
    from cml_tf import train  # pylint: disable=import-outside-toplevel
    config = small_config()
    config.viz.enabled = False
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert "viz" not in metrics
    assert not (tmp_path / "run" / "item_map.png").exists()
    assert not (tmp_path / "run" / "tensorboard" / "projector_config.pbtxt").exists()


def test_a_failing_picture_does_not_fail_the_run(tmp_path, monkeypatch):
    from cml_tf import train  # pylint: disable=import-outside-toplevel

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(viz, "plot_embedding_2d", broken)
    metrics = train.train_and_evaluate(small_config(), str(tmp_path / "run"))
    assert metrics["viz"]["error"] == "item_map: RuntimeError: no fonts"
    assert (tmp_path / "run" / "metrics.json").exists()
    # The other pictures do not depend on the map.
    check_png(tmp_path / "run" / "training_curves.png", 1100, 400)
    assert (tmp_path / "run" / "tensorboard" / "projector_config.pbtxt").exists()


# ---- a person's own data ----------------------------------------------------------------------


def load_config_file(name):
    import importlib.util  # pylint: disable=import-outside-toplevel
    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / name
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


HISTORY = {"loss": [3.0, 2.5, 2.2], "metric_loss": [3.0, 2.5, 2.2]}
VALIDATION = [{"epoch": 1, "recall@50": 0.2}, {"epoch": 3, "recall@50": 0.3}]


def visuals_of_own_data(config_name, tmp_path, monkeypatch):
    """write_workdir_visuals of an (untrained) CML on own files, offline: CML_TF_DATA is an
    empty folder and every download address a folder that does not exist."""
    from cml_tf.data.from_config import load_data  # pylint: disable=import-outside-toplevel
    from cml_tf.models import CML  # pylint: disable=import-outside-toplevel
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("CML_TF_DATA", str(cache))
    monkeypatch.setenv("CML_TF_CITEULIKE_T_URL", str(tmp_path / "offline"))
    config = load_config_file(config_name)
    paths = write_own_split(tmp_path, n_users=200, n_items=150, n_clusters=4,
                            mean_per_user=10)
    config.data.update(train_path=str(paths["train"]), valid_path=str(paths["valid"]),
                       test_path=str(paths["test"]))
    config.viz.method = "pca"
    split = load_data(config.data)
    model = CML.from_interactions(split.train, dim=8, seed=0)
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = viz.write_workdir_visuals(model, split, config, workdir, HISTORY, VALIDATION)
    return result, workdir, cache, (model, split)


@pytest.mark.parametrize("config_name", ["citeulike_t.py", "default.py", "own_data.py"])
def test_own_data_pictures_never_touch_a_named_data_set(config_name, tmp_path, monkeypatch,
                                                         caplog):
    caplog.set_level(logging.INFO)
    result, workdir, cache, _ = visuals_of_own_data(config_name, tmp_path, monkeypatch)
    assert list(cache.iterdir()) == []  # no download tried, no empty cache folder
    assert "error" not in result, result
    assert "features_from" not in caplog.text and "download" not in caplog.text
    check_png(workdir / "item_map.png", 900, 750)
    check_png(workdir / "training_curves.png", 1100, 400)
    assert "item_map_neighbour_agreement" not in result  # no labels, nothing to agree with


def test_a_map_without_labels_says_so(tmp_path, monkeypatch):
    _, _, _, (model, split) = visuals_of_own_data("default.py", tmp_path, monkeypatch)
    figure = viz.plot_item_map(model, split.train, None, method="pca", max_items=100)
    assert viz.NO_LABELS in figure.axes[0].get_title()
    labels = np.array(["a", "b"] * (split.train.n_items // 2) + ["a"] * (split.train.n_items % 2))
    figure = viz.plot_item_map(model, split.train, labels, method="pca", max_items=100)
    assert viz.NO_LABELS not in figure.axes[0].get_title()


def test_few_labelled_items_still_give_the_map_and_the_curves(tmp_path):
    """Labels on fewer items than the agreement's k: the map is drawn, the curves are too."""
    from cml_tf.data import Interactions, make_synthetic  # pylint: disable=import-outside-toplevel
    from cml_tf.data.split import split_per_user  # pylint: disable=import-outside-toplevel
    from cml_tf.models import CML  # pylint: disable=import-outside-toplevel
    from cml_tf.config import get_config  # pylint: disable=import-outside-toplevel
    data = make_synthetic(n_users=200, n_items=150, n_clusters=4, mean_per_user=10,
                          with_features=False)
    features = sp.csr_matrix((np.ones(5), (np.arange(5), np.zeros(5))), shape=(150, 1))
    data = Interactions(data.matrix, data.user_ids, data.item_ids, item_features=features,
                        feature_names=["rare tag"])
    split = split_per_user(data, seed=0)
    config = get_config()
    config.data.name = "files"
    config.viz.method = "pca"
    model = CML.from_interactions(split.train, dim=8, seed=0)
    result = viz.write_workdir_visuals(model, split, config, tmp_path, HISTORY, VALIDATION)
    assert "error" not in result, result
    check_png(tmp_path / "item_map.png", 900, 750)
    check_png(tmp_path / "training_curves.png", 1100, 400)
    assert "item_map_neighbour_agreement" not in result
