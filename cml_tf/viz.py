"""Pictures of the metric space: 2-D item maps, training curves, TensorBoard projector files.

The paper's section 4.5 (Figure 5) shows what a picture of the learned metric reveals: a t-SNE
map of the item space in which items liked by the same users sit together. This module draws
that map for any model with ``item_vectors``, plots the training curves of a ``model.fit`` run
(or of a training workdir), and writes the vectors with readable metadata so TensorBoard's
Embedding Projector opens them:

    from cml_tf import viz
    labels = viz.common_tag_labels(train.item_features, train.feature_names)   # per item
    items = viz.popular_items(train, 2000)
    fig = viz.plot_embedding_2d(model.item_vectors[items], labels[items], method="tsne",
                                path="item_map.png")
    viz.plot_training_curves(history, validation_callback, path="curves.png")
    viz.export_projector("runs/cml/tensorboard", model.item_vectors, model.user_vectors,
                         item_metadata=viz.item_metadata(train, labels))
    # tensorboard --logdir runs/cml/tensorboard  ->  the "Projector" tab

``train_and_evaluate`` calls :func:`write_workdir_visuals` after training (``config.viz``):
``<workdir>/item_map.png``, ``<workdir>/training_curves.png`` and the projector files in
``<workdir>/tensorboard/`` (``projector_config.pbtxt`` + ``projector/*.tsv``).

Figures are built with ``matplotlib.figure.Figure`` (not ``pyplot``) and saved through the Agg
canvas, so nothing here needs a display or changes the process's matplotlib backend; in a
notebook, a returned figure shows as the cell's value (``%matplotlib inline``) or with
``display(fig)``. TensorFlow is not imported by this module.
"""

import collections
import json
import logging
import math
import pathlib
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

METHODS = ("tsne", "pca")
OTHER = "other"
PROJECTOR_SUBDIR = "projector"
MAP_FILE = "item_map.png"
CURVES_FILE = "training_curves.png"
LOSS_PARTS = ("loss", "metric_loss", "covariance_loss", "feature_loss")

Map2D = collections.namedtuple("Map2D", "index xy labels method")
Map2D.__doc__ = """What a map shows: rows of the input drawn (``index``), their 2-D coordinates
(``xy``), their labels (or None) and the method. ``plot_embedding_2d`` attaches it to the
figure as ``figure.embedding_2d`` (one per axes in ``figure.embedding_2d_all``)."""


# ---- 2-D projection ---------------------------------------------------------------------------


def project_2d(vectors, method: str = "tsne", seed: int = 0, perplexity: float = 30.0,
               n_threads: Optional[int] = 1) -> np.ndarray:
    """2-D coordinates ``[n, 2]`` of ``vectors`` (dense ``[n, d]``, or a scipy sparse matrix).

    ``method``: ``"tsne"`` (scikit-learn's Barnes-Hut t-SNE, PCA initialisation, as the paper's
    Figure 5) or ``"pca"`` (the two leading principal components: instant, linear, and for
    CML's vectors, which sit near the unit sphere in r dimensions, much less revealing).
    A sparse input (e.g. bag-of-tags features) is first reduced to 50 dimensions with a
    truncated SVD. ``n_threads`` caps t-SNE's OpenMP threads (default 1: on a busy shared
    machine more threads than free cores makes t-SNE many times slower); None leaves them.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if sp.issparse(vectors):
        from sklearn.decomposition import TruncatedSVD  # pylint: disable=import-outside-toplevel
        matrix = sp.csr_matrix(vectors, dtype=np.float32)
        components = max(1, min(50, matrix.shape[1] - 1, matrix.shape[0] - 1))
        vectors = TruncatedSVD(components, random_state=seed).fit_transform(matrix)
    x = np.asarray(vectors, np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a matrix [n, d], got shape {x.shape}")
    if len(x) < 3:
        raise ValueError(f"a 2-D map needs at least 3 points, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("vectors contain NaN or Inf values")
    if x.shape[1] == 1:
        x = np.concatenate([x, np.zeros_like(x)], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
        return PCA(2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
    perplexity = float(min(perplexity, (len(x) - 1) / 3.0))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    if n_threads is None:
        return tsne.fit_transform(x)
    from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
    with threadpool_limits(limits=int(n_threads), user_api="openmp"):
        return tsne.fit_transform(x)


def neighbour_agreement(xy, labels, k: int = 10, ignore: Optional[str] = OTHER) -> dict:
    """How well a map keeps labelled groups together: for every labelled point, the fraction of
    its ``k`` nearest neighbours in ``xy`` (itself excluded) that carry the same label.

    Returns ``{"agreement": mean fraction, "chance": sum_c p_c^2 (the agreement of a map that
    placed points at random), "points": n, "k": k}``. Points labelled ``ignore`` (default
    "other") are left out, as neighbours too.
    """
    from sklearn.neighbors import NearestNeighbors  # pylint: disable=import-outside-toplevel
    xy = np.asarray(xy, np.float64)
    labels = np.asarray(labels).astype(str)
    keep = labels != ignore if ignore is not None else np.ones(len(labels), bool)
    xy, labels = xy[keep], labels[keep]
    if len(labels) <= k:
        raise ValueError(f"need more than k={k} labelled points, got {len(labels)}")
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    same = labels[neighbours[:, 1:]] == labels[:, None]
    _, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum()
    return {"agreement": float(same.mean()), "chance": float(np.sum(share ** 2)),
            "points": int(len(labels)), "k": int(k)}


# ---- labels and readable items ----------------------------------------------------------------


def tag_frequencies(item_features) -> np.ndarray:
    """Number of items carrying each feature (column) of a binary items x features matrix."""
    features = sp.csc_matrix(item_features)
    return np.diff(features.indptr)


def common_tag_labels(item_features, feature_names, n_labels: int = 10,
                      other: str = OTHER, ignore: Sequence[str] = ()) -> np.ndarray:
    """One label per item: among the ``n_labels`` tags carried by the most items, the most
    frequent one the item carries; ``other`` when it carries none of them. (The colouring of
    the item maps; for citeulike-t: review, bioinformatics, statistics, network, ...) Tags in
    ``ignore`` are never labels (citeulike-t's "review" names a kind of article, not a topic)."""
    features = sp.csr_matrix(item_features)
    names = np.asarray(feature_names).astype(str)
    frequency = tag_frequencies(features)
    frequency = np.where(np.isin(names, list(ignore)), -1, frequency)
    common = np.argsort(-frequency, kind="stable")[:min(n_labels, int((frequency >= 0).sum()))]
    rank = np.full(features.shape[1], n_labels, np.int64)
    rank[common] = np.arange(len(common))
    labels = np.full(features.shape[0], other, dtype=object)
    rows = np.repeat(np.arange(features.shape[0]), np.diff(features.indptr))
    ranks = rank[features.indices]
    chosen = ranks < n_labels
    if chosen.any():
        best = np.full(features.shape[0], n_labels, np.int64)
        np.minimum.at(best, rows[chosen], ranks[chosen])
        has = best < n_labels
        labels[has] = names[common[best[has]]]
    return labels.astype(str)


def item_tags(item_features, feature_names, items, n: int = 3) -> List[str]:
    """For each item index, its ``n`` most frequent tags (by how many items carry them) joined
    as ``"tag, tag, tag"``: a readable name for an article that has no title in the data."""
    features = sp.csr_matrix(item_features)
    names = np.asarray(feature_names).astype(str)
    frequency = tag_frequencies(features)
    out = []
    for item in np.atleast_1d(np.asarray(items, np.int64)):
        tags = features.indices[features.indptr[item]:features.indptr[item + 1]]
        tags = tags[np.argsort(-frequency[tags], kind="stable")][:n]
        out.append(", ".join(names[tags]) if len(tags) else "(no tags)")
    return out


def popular_items(train, n: int) -> np.ndarray:
    """Indices of the ``n`` items with the most training interactions (ties by index), sorted:
    the items whose vectors training placed most firmly, the ones worth drawing."""
    counts = np.asarray(train.item_counts())
    n = min(int(n), len(counts))
    return np.sort(np.argsort(-counts, kind="stable")[:n])


def active_users(train, n: int) -> np.ndarray:
    """Indices of the ``n`` users with the most training interactions, sorted."""
    counts = np.asarray(train.user_counts())
    n = min(int(n), len(counts))
    return np.sort(np.argsort(-counts, kind="stable")[:n])


def item_metadata(train, labels=None, n_tags: int = 3) -> Dict[str, list]:
    """Projector metadata columns for every item of ``train`` (an Interactions): ``id``,
    ``label`` (e.g. :func:`common_tag_labels`), ``tags`` (its most frequent tags, with
    features) and ``likes`` (training interactions)."""
    columns = {"id": list(train.item_ids)}
    if labels is not None:
        columns["label"] = list(np.asarray(labels).astype(str))
    if train.item_features is not None:
        columns["tags"] = item_tags(train.item_features, train.feature_names,
                                    np.arange(train.n_items), n_tags)
    columns["likes"] = [int(c) for c in train.item_counts()]
    return columns


def user_metadata(train, item_labels=None) -> Dict[str, list]:
    """Projector metadata columns for every user: ``id``, ``likes`` (training interactions)
    and, given item labels, ``label``: the most common label among the user's training items
    (``other`` excluded when the user has any other)."""
    columns = {"id": list(train.user_ids), "likes": [int(c) for c in train.user_counts()]}
    if item_labels is not None:
        item_labels = np.asarray(item_labels).astype(str)
        matrix = train.matrix
        values = []
        for user in range(train.n_users):
            mine = item_labels[matrix.indices[matrix.indptr[user]:matrix.indptr[user + 1]]]
            named = mine[mine != OTHER]
            pool = named if len(named) else mine
            if len(pool) == 0:
                values.append(OTHER)
                continue
            names, counts = np.unique(pool, return_counts=True)
            values.append(str(names[np.argmax(counts)]))
        columns["label"] = values
    return columns


# ---- figures ----------------------------------------------------------------------------------


def _new_figure(figsize, ncols=1):
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    figure = Figure(figsize=figsize, layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def save_figure(figure, path, dpi: int = 100) -> pathlib.Path:
    """Writes ``figure`` as a PNG (through the Agg canvas: no display needed)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _palette(n):
    from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
    name = "tab10" if n <= 10 else "tab20"
    colours = colormaps[name].colors
    return [colours[i % len(colours)] for i in range(n)]


def plot_embedding_2d(vectors, labels=None, *, method: str = "tsne", max_points: int = 3000,
                      title: Optional[str] = None, path=None, seed: int = 0, ax=None,
                      max_labels: int = 10, other: str = OTHER, xy=None,
                      figsize=(9.0, 7.5), dpi: int = 100, point_size: Optional[float] = None,
                      perplexity: float = 30.0, legend: bool = True, n_threads: Optional[int] = 1):
    """A 2-D map of ``vectors`` (e.g. ``model.item_vectors[items]``) coloured by ``labels``.

    Args:
      vectors: ``[n, d]`` array (or a scipy sparse matrix: raw features, see
        :func:`project_2d`).
      labels: optional per-row labels; the ``max_labels`` most frequent get a colour and a
        legend entry (with their counts), the rest and ``other`` are drawn small and grey.
      method: ``"tsne"`` or ``"pca"`` (:func:`project_2d`).
      max_points: rows beyond this are subsampled uniformly (seeded) before projecting
        (t-SNE's time grows with the number of points: about 10 s for 2,000 on one core).
      title: the axes' title (default: the method and the number of points).
      path: also save the figure there as a PNG of ``figsize * dpi`` pixels.
      ax: draw into this matplotlib Axes (e.g. one panel of a side-by-side comparison)
        instead of a new figure; ``figsize`` is then ignored.
      xy: precomputed 2-D coordinates of the rows (skips the projection).
      n_threads: t-SNE's thread cap (see :func:`project_2d`).

    Returns:
      The matplotlib Figure. ``figure.embedding_2d`` is a :class:`Map2D` (``index`` of the
      drawn rows, their ``xy``, ``labels``, ``method``), e.g. for :func:`neighbour_agreement`.
    """
    n = vectors.shape[0]
    index = np.arange(n)
    if n > max_points:
        index = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    if xy is None:
        rows = vectors[index] if sp.issparse(vectors) else np.asarray(vectors)[index]
        xy = project_2d(rows, method, seed=seed, perplexity=perplexity, n_threads=n_threads)
    else:
        xy = np.asarray(xy, np.float64)
        if len(xy) == n and len(index) != n:
            xy = xy[index]
        if xy.shape != (len(index), 2):
            raise ValueError(f"xy must have shape ({len(index)}, 2), got {xy.shape}")
    shown = None if labels is None else np.asarray(labels).astype(str)[index]

    if ax is None:
        figure, (ax,) = _new_figure(figsize)
    else:
        figure = ax.figure
    size = point_size or float(np.clip(8000.0 / max(len(index), 1), 4.0, 30.0))
    if shown is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c="tab:blue", alpha=0.7, linewidths=0)
    else:
        names, counts = np.unique(shown[shown != other], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        coloured = list(names[order][:max_labels])
        rest = ~np.isin(shown, coloured)
        if rest.any():
            ax.scatter(xy[rest, 0], xy[rest, 1], s=size * 0.5, c="lightgrey", alpha=0.6,
                       linewidths=0, label=f"{other} ({int(rest.sum())})")
        for name, colour in zip(coloured, _palette(len(coloured))):
            mask = shown == name
            ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=colour, alpha=0.85,
                       linewidths=0, label=f"{name} ({int(mask.sum())})")
        if legend:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                      markerscale=max(1.0, 24.0 / size) ** 0.5, frameon=False)
    axis = {"tsne": "t-SNE", "pca": "PC"}[method]
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{'t-SNE' if method == 'tsne' else 'PCA'} map of {len(index):,} "
                 "points", fontsize="medium")
    result = Map2D(index, xy, shown, method)
    figure.embedding_2d = result
    figure.embedding_2d_all = getattr(figure, "embedding_2d_all", []) + [result]
    if path is not None:
        save_figure(figure, path, dpi)
    return figure


def _history_dict(history) -> Dict[str, list]:
    if history is None:
        return {}
    if hasattr(history, "history"):  # a keras History
        history = history.history
    return {str(k): [float(v) for v in values] for k, values in dict(history).items()}


def _validation_list(validation) -> List[dict]:
    if validation is None:
        return []
    if hasattr(validation, "history") and not isinstance(validation, (list, tuple)):
        validation = validation.history  # a ValidationRecall callback
    return [dict(row) for row in validation]


def _finish_epoch_axis(axis, drawn: bool, empty_text: str, ylabel: str, title: str):
    """Legend (or a note that nothing was drawn), integer epoch ticks, labels, title, grid."""
    from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel
    if drawn:
        axis.legend(fontsize="small")
    else:
        axis.text(0.5, 0.5, empty_text, ha="center", va="center", transform=axis.transAxes)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize="medium")
    axis.grid(alpha=0.3)


def plot_training_curves(history=None, validation=None, *, metrics: Sequence[str] = None,
                         epochs: Optional[Sequence[int]] = None,
                         reference: Optional[Mapping[str, float]] = None,
                         title: Optional[str] = None, path=None, figsize=(11.0, 4.0),
                         dpi: int = 100):
    """Loss parts per epoch (left) and validation metrics per evaluation (right).

    Args:
      history: what ``model.fit`` returned (a Keras History), or a dict ``name -> per-epoch
        values`` (e.g. ``history.history``). The loss parts found (``loss``,
        ``metric_loss``, ``covariance_loss``, ``feature_loss``) are drawn.
      validation: a :class:`~cml_tf.callbacks.ValidationRecall` callback or its ``history``
        (a list of ``{"epoch": e, "recall@50": ..., ...}``), or ``metrics.json``'s
        ``validation_history``.
      metrics: validation metrics to draw (default: the ``recall@K`` found).
      epochs: epoch numbers of ``history``'s entries (default 1, 2, ...; a Keras History's
        ``epoch`` list is used when given one).
      reference: horizontal reference lines on the right panel, e.g.
        ``{"paper CML, test R@50": 0.2714}``.
      path: also save the figure there as a PNG.
    """
    losses = _history_dict(history)
    rows = _validation_list(validation)
    if epochs is None:
        epochs = ([e + 1 for e in history.epoch] if hasattr(history, "epoch")
                  else None)
    figure, (left, right) = _new_figure(figsize, ncols=2)
    parts = [name for name in LOSS_PARTS if name in losses and losses[name]]
    for name in parts:
        values = losses[name]
        x = list(epochs) if epochs is not None and len(epochs) == len(values) else \
            list(range(1, len(values) + 1))
        left.plot(x, values, marker="o" if len(values) < 30 else None, markersize=3,
                  label=name.replace("_", " "), linewidth=2.0 if name == "loss" else 1.2)
    _finish_epoch_axis(left, bool(parts), "no loss history", "loss per positive pair",
                       "training loss (weighted parts)")

    if metrics is None:
        found = sorted({key for row in rows for key in row if key.startswith("recall@")},
                       key=lambda key: int(key.split("@")[1]))
        metrics = found
    drawn = False
    for name in metrics:
        points = [(row["epoch"], row[name]) for row in rows if name in row]
        if points:
            x, y = zip(*points)
            right.plot(x, y, marker="o", markersize=4, label=f"validation {name}")
            drawn = True
    for (label, value), style in zip((reference or {}).items(), ("--", ":", "-.", (0, (1, 3)))):
        right.axhline(value, color="grey", linestyle=style, linewidth=1, label=label)
        drawn = True
    _finish_epoch_axis(right, drawn, "no validation history", "metric",
                       "validation (known training items excluded)")
    if title:
        figure.suptitle(title)
    if path is not None:
        save_figure(figure, path, dpi)
    return figure


def workdir_history(workdir):
    """``(loss history, validation history)`` of a training workdir.

    The validation history comes from ``metrics.json`` (``validation_history``), or for an
    unfinished run from ``checkpoints/validation.json``; the per-epoch loss parts from the
    TensorBoard event files in ``tensorboard/train`` (``epoch_loss``, ``epoch_metric_loss``,
    ...). Returns ``({name: [values]}, [{"epoch": e, ...}])`` plus the epochs of the losses as
    ``history["epoch"]``.
    """
    workdir = pathlib.Path(workdir)
    validation = []
    metrics_file = workdir / "metrics.json"
    state_file = workdir / "checkpoints" / "validation.json"
    if metrics_file.exists():
        validation = json.loads(metrics_file.read_text()).get("validation_history") or []
    if not validation and state_file.exists():
        validation = json.loads(state_file.read_text()).get("history") or []
    history = _event_scalars(workdir / "tensorboard" / "train", prefix="epoch_")
    return history, validation


def _event_scalars(folder: pathlib.Path, prefix: str) -> Dict[str, list]:
    """Scalars named ``prefix + name`` in the event files of ``folder``, by step (last wins)."""
    if not folder.is_dir():
        return {}
    # pylint: disable=import-outside-toplevel
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util
    values: Dict[str, Dict[int, float]] = collections.defaultdict(dict)
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if not value.tag.startswith(prefix):
                    continue
                if value.HasField("tensor"):
                    number = float(tensor_util.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                values[value.tag[len(prefix):]][int(event.step)] = number
    history: Dict[str, list] = {}
    steps = sorted({step for series in values.values() for step in series})
    for name, series in values.items():
        history[name] = [series.get(step, math.nan) for step in steps]
    if steps:
        history["epoch"] = [step + 1 for step in steps]  # Keras logs epoch e (0-based) at e
    return history


def plot_workdir_curves(workdir, path=None, **kwargs):
    """:func:`plot_training_curves` of a training workdir (see :func:`workdir_history`)."""
    history, validation = workdir_history(workdir)
    epochs = history.pop("epoch", None)
    return plot_training_curves(history, validation, epochs=epochs, path=path, **kwargs)


# ---- TensorBoard Embedding Projector ----------------------------------------------------------


_UNSAFE = re.compile(r"[\t\r\n]+")


def _cell(value) -> str:
    text = _UNSAFE.sub(" ", str(value)).strip()
    return text if text else "-"


def _write_vectors(path: pathlib.Path, vectors: np.ndarray):
    np.savetxt(path, vectors, fmt="%.6g", delimiter="\t")


def _write_metadata(path: pathlib.Path, columns: Mapping[str, Sequence], rows: np.ndarray):
    names = list(columns)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        if len(names) > 1:  # the projector reads a header line only with two or more columns
            handle.write("\t".join(_cell(name) for name in names) + "\n")
        values = [np.asarray(columns[name], dtype=object) for name in names]
        for row in rows:
            handle.write("\t".join(_cell(column[row]) for column in values) + "\n")


def export_projector(log_dir, item_vectors, user_vectors=None, *,
                     item_metadata: Optional[Mapping[str, Sequence]] = None,
                     user_metadata: Optional[Mapping[str, Sequence]] = None,
                     items: Optional[Iterable[int]] = None, users: Optional[Iterable[int]] = None,
                     sub_dir: str = PROJECTOR_SUBDIR) -> pathlib.Path:
    """Writes vectors and metadata for TensorBoard's Embedding Projector into ``log_dir``.

    ``tensorboard --logdir <log_dir>`` then shows them in its "Projector" tab (the projector
    reads ``<log_dir>/projector_config.pbtxt``, written with TensorBoard's own
    ``ProjectorConfig`` proto; the vectors and metadata are TSV files in ``<log_dir>/<sub_dir>/``,
    referenced by relative paths so the folder can be moved).

    Args:
      log_dir: a TensorBoard log folder (for a training workdir: ``<workdir>/tensorboard``).
      item_vectors, user_vectors: ``[n_items, dim]`` and optional ``[n_users, dim]`` arrays;
        written as the embeddings "items" and "users".
      item_metadata, user_metadata: columns ``name -> one value per item (user)``, e.g. from
        :func:`item_metadata` / :func:`user_metadata`; tabs and line breaks in values become
        spaces. Default: the row number.
      items, users: write only these rows (e.g. :func:`popular_items`); default all.
      sub_dir: the folder inside ``log_dir`` for the TSV files.

    Returns:
      The path of ``projector_config.pbtxt``.
    """
    # pylint: disable=import-outside-toplevel
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    log_dir = pathlib.Path(log_dir)
    folder = log_dir / sub_dir
    folder.mkdir(parents=True, exist_ok=True)
    config = projector.ProjectorConfig()
    for name, vectors, metadata, rows in (("items", item_vectors, item_metadata, items),
                                          ("users", user_vectors, user_metadata, users)):
        if vectors is None:
            continue
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"{name} vectors must be a non-empty matrix, got {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError(f"{name} vectors contain NaN or Inf values")
        rows = np.arange(len(vectors)) if rows is None else np.asarray(list(rows), np.int64)
        metadata = dict(metadata) if metadata else {"row": list(range(len(vectors)))}
        for column, values in metadata.items():
            if len(values) != len(vectors):
                raise ValueError(f"{name} metadata column {column!r} has {len(values)} values "
                                 f"for {len(vectors)} vectors")
        _write_vectors(folder / f"{name}.tsv", vectors[rows])
        _write_metadata(folder / f"{name}_metadata.tsv", metadata, rows)
        embedding = config.embeddings.add()
        embedding.tensor_name = name
        embedding.tensor_path = f"{sub_dir}/{name}.tsv"
        embedding.metadata_path = f"{sub_dir}/{name}_metadata.tsv"
        embedding.tensor_shape.extend([len(rows), vectors.shape[1]])
    if not config.embeddings:
        raise ValueError("nothing to write: no vectors given")
    path = log_dir / "projector_config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def read_projector_config(log_dir):
    """The ``ProjectorConfig`` proto of ``<log_dir>/projector_config.pbtxt``, parsed as
    TensorBoard parses it (``text_format.Parse``; raises on a malformed file)."""
    # pylint: disable=import-outside-toplevel
    from google.protobuf import text_format
    from tensorboard.plugins import projector
    config = projector.ProjectorConfig()
    text_format.Parse((pathlib.Path(log_dir) / "projector_config.pbtxt").read_text(), config)
    return config


# ---- the training workdir ---------------------------------------------------------------------


def _labelled_train(split, config):
    """``split.train``, or when it has no item features (a CML run, which drops them) the named
    data set loaded again from its folder with features, used only to name and colour the
    items. A person's own files are never joined to a named data set here: only their config
    can ask for that (``data.use_features``), and then ``split.train`` has the features."""
    train = split.train
    data = config.get("data") if config is not None else None
    if train.item_features is not None or data is None or data.get("train_path") \
            or data.get("name") == "files":
        return train
    try:
        from cml_tf.data.from_config import load_data  # pylint: disable=import-outside-toplevel
        data_config = data.copy_and_resolve_references()
        data_config.use_features = True
        data_config.download = False  # a picture never downloads anything
        labelled = load_data(data_config).train
    except Exception as error:  # pylint: disable=broad-except  (no features: no labels)
        log.info("item map without labels: %s", error)
        return train
    if labelled.item_features is None or not np.array_equal(labelled.item_ids, train.item_ids):
        return train
    return labelled


def _planted_labels(config, train):
    """``"cluster k"`` per item for the embedded synthetic data (its planted taste clusters)."""
    data = config.get("data") if config is not None else None
    if data is None or data.get("name") != "synthetic" or data.get("train_path"):
        return None
    from cml_tf.data.synthetic import planted_labels  # pylint: disable=import-outside-toplevel
    item_cluster = planted_labels(**data.synthetic.to_dict())[0]
    if len(item_cluster) != train.n_items:
        return None
    return np.char.add("cluster ", item_cluster.astype(str))


NO_LABELS = "not coloured: the data has no item labels (tags or other item features)"


def plot_item_map(model, train, labels=None, method: str = "tsne", max_items: int = 1000,
                  n_labels: int = 10, seed: int = 0, path=None):
    """The workdir's item map: the ``max_items`` most liked items of ``train`` (an
    Interactions) at ``model.item_vectors``, coloured by ``labels`` (one per item; None: one
    colour, and the title says why)."""
    items = popular_items(train, max_items)
    title = (f"{type(model).__name__} item space: the {len(items):,} most liked items "
             f"({'t-SNE' if method == 'tsne' else 'PCA'})")
    if labels is None:
        title += "\n" + NO_LABELS
    return plot_embedding_2d(
        model.item_vectors[items], None if labels is None else labels[items], method=method,
        max_points=len(items), seed=seed, max_labels=n_labels, title=title, path=path)


def write_workdir_visuals(model, split, config, workdir, history=None, validation=None) -> dict:
    """What ``train_and_evaluate`` writes after training when ``config.viz.enabled``:

    * ``<workdir>/item_map.png``: the ``config.viz.max_items`` most liked items' vectors,
      mapped to 2-D with ``config.viz.method``, coloured by their most frequent common tag
      (when the data set has item features, even if the model does not use them); without
      labels (a person's own data) the map is one colour and its title says so;
    * ``<workdir>/training_curves.png``: loss parts and validation metrics per epoch (they
      never depend on labels);
    * ``<workdir>/tensorboard/projector_config.pbtxt`` + ``projector/{items,users}{,_metadata}
      .tsv``: the item and user vectors (up to ``config.viz.projector_max_rows`` each, the
      most active first) for TensorBoard's Embedding Projector.

    Returns the paths written (for ``metrics.json``). Each picture is made on its own: a
    failure is logged and returned as ``{"error": ...}`` (``"<name>: <error>"`` per failed
    picture) instead of raised, and does not stop the others; a picture must not cost a
    finished training run.
    """
    workdir = pathlib.Path(workdir)
    viz_config = config.viz
    result, errors = {}, []
    train, labels, n_labels = split.train, None, int(viz_config.get("n_labels", 10))
    try:
        train = _labelled_train(split, config)
        labels = _planted_labels(config, train)
        if labels is not None:  # synthetic data: colour by the planted taste clusters
            n_labels = max(n_labels, min(20, len(np.unique(labels))))
        elif train.item_features is not None:
            labels = common_tag_labels(train.item_features, train.feature_names, n_labels,
                                       ignore=tuple(viz_config.get("ignore_tags", ())))
    except Exception as error:  # pylint: disable=broad-except
        errors.append(f"labels: {type(error).__name__}: {error}")
    name = type(model).__name__

    def picture(key, make):
        try:
            result[key] = make()
        except Exception as error:  # pylint: disable=broad-except
            log.warning("writing %s failed: %s: %s", key, type(error).__name__, error)
            errors.append(f"{key}: {type(error).__name__}: {error}")

    def item_map():
        figure = plot_item_map(model, train, labels, viz_config.method,
                               int(viz_config.max_items), n_labels, int(config.get("seed", 0)),
                               path=workdir / MAP_FILE)
        drawn = figure.embedding_2d.labels
        if drawn is not None and np.sum(drawn != OTHER) > 10:  # neighbour_agreement's k
            result["item_map_neighbour_agreement"] = neighbour_agreement(
                figure.embedding_2d.xy, drawn)
        return str(workdir / MAP_FILE)

    def curves():
        plot_training_curves(history, validation, title=f"{name} training",
                             path=workdir / CURVES_FILE)
        return str(workdir / CURVES_FILE)

    def projector():
        cap = int(viz_config.get("projector_max_rows", 100_000))
        return str(export_projector(
            workdir / "tensorboard", model.item_vectors, model.user_vectors,
            item_metadata=item_metadata(train, labels), user_metadata=user_metadata(train, labels),
            items=popular_items(train, cap), users=active_users(train, cap)))

    picture("item_map", item_map)
    if history is not None or validation is not None:
        picture("training_curves", curves)
    picture("projector_config", projector)
    if errors:
        result["error"] = "; ".join(errors)
    return result
