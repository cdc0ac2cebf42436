"""Training speed of CML on citeulike-t (r=100) on this machine.

    python benchmarks/throughput.py [--runs=5] [--epochs=10]

1. Positive pairs per second of ``model.fit`` with the citeulike-t config at U = 20 (the
   target's U; the config itself trains with U = 10, which is timed too) and r = 100, at the
   config's batch size (``--batch_sizes`` adds others, at U = 20): median of ``--runs`` runs,
   each timing ``--epochs`` epochs after a warm-up epoch (which absorbs tracing and XLA
   compilation). Every row says which of its settings are the config's.
2. Time to paper-level recall with the config as it is: training seconds (evaluation time
   excluded) until test Recall@50 >= 0.2714 (the paper's CML figure), checked after every
   epoch; median of 3 seeds. This is a speed measurement: the config was chosen on the
   validation set.
3. Peak memory (max RSS) of a full CML+F training run on citeulike-t, in a child process.

Writes benchmarks/results/throughput.{md,json}.
"""

import resource
import statistics
import subprocess
import sys
import time

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import app, flags

from common import REPO, SHARED_DATA, load_config, write_table

flags.DEFINE_integer("runs", 5, "Timed runs per batch size.")
flags.DEFINE_integer("epochs", 10, "Timed epochs per run.")
flags.DEFINE_list("batch_sizes", [], "Extra batch sizes to time (the config's is always timed).")
flags.DEFINE_bool("memory", True, "Measure the peak memory of a CML+F run.")
FLAGS = flags.FLAGS
PAPER_RECALL_50 = 0.2714
TARGET_U, TARGET_DIM = 20, 100  # the settings of the 350,000 pairs/s target


def fit_label(config, batch_size: int, num_negatives: int) -> str:
    """The row label of a pairs/s measurement, saying which of its settings are the config's."""
    own_u = config.model.num_negatives
    u = f"U {num_negatives} " + ("(the config's)" if num_negatives == own_u
                                 else f"(the config trains with U {own_u})")
    batch = f"batch {batch_size}" + (" (the config's)" if batch_size == config.train.batch_size
                                     else "")
    return f"model.fit positive pairs/s, {u}, r {TARGET_DIM}, {batch}"


def fit_settings(config, extra_batch_sizes=()):
    """(batch size, U, target) of every pairs/s row: the target's U and the config's own U at
    the config's batch size, then the target's U at the extra batch sizes."""
    batch = config.train.batch_size
    rows = [(batch, TARGET_U, "≥ 350,000")]
    if config.model.num_negatives != TARGET_U:
        rows.append((batch, config.model.num_negatives, ""))
    rows += [(int(b), TARGET_U, "") for b in extra_batch_sizes if int(b) != batch]
    return rows


def citeulike_split(config):
    from cml_tf.data.from_config import load_data  # pylint: disable=C0415
    config.data.data_dir = str(SHARED_DATA / "citeulike-t")
    return load_data(config.data)


def build(config, split, seed):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from cml_tf import train  # pylint: disable=import-outside-toplevel
    from cml_tf.data.pipeline import positive_pairs_dataset  # pylint: disable=C0415
    from cml_tf.models import build_model  # pylint: disable=import-outside-toplevel
    tf.keras.utils.set_random_seed(seed)
    model = build_model(config.model, split.train, seed=seed,
                        jit_sampling=config.train.jit_sampling)
    model.compile(optimizer=train.make_optimizer(config.train))
    return model, positive_pairs_dataset(split.train, config.train.batch_size, seed=seed)


def pairs_per_second(config, split, batch_size, num_negatives):
    config = config.copy_and_resolve_references()
    config.train.batch_size = batch_size
    config.model.num_negatives, config.model.dim = num_negatives, TARGET_DIM
    rates = []
    for run_index in range(FLAGS.runs):
        model, dataset = build(config, split, seed=run_index)
        model.fit(dataset, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(dataset, epochs=1 + FLAGS.epochs, initial_epoch=1, verbose=0)
        rates.append(split.train.n_interactions * FLAGS.epochs / (time.perf_counter() - start))
    return rates


def time_to_recall(config, split, seed, max_epochs=200):
    from cml_tf.evaluation import evaluate  # pylint: disable=import-outside-toplevel
    model, dataset = build(config, split, seed)
    trained = 0.0
    for epoch in range(max_epochs):
        start = time.perf_counter()
        model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        trained += time.perf_counter() - start
        if evaluate(model, split, "test", ks=(50,))["recall@50"] >= PAPER_RECALL_50:
            return trained, epoch + 1
    return float("inf"), max_epochs


def peak_memory_gb(config_path):
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import cml_tf; "
        "from common import SHARED_DATA, load_config, run; "
        f"c = load_config({config_path!r}); c.data.data_dir = str(SHARED_DATA / 'citeulike-t'); "
        "c.export.enabled = False; c.viz.enabled = False; c.train.verbose = 0; "
        "m = run(c); print('RECALL', m['test']['recall@50'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak_kb / 1024 ** 2, done.stdout.strip().splitlines()[-1]


def main(argv):
    del argv
    config = load_config("configs/citeulike_t.py")
    config.train.verbose = 0
    split = citeulike_split(config)
    rows, raw = [], {}
    for batch_size, num_negatives, target in fit_settings(config, FLAGS.batch_sizes):
        rates = pairs_per_second(config, split, batch_size, num_negatives)
        raw[f"pairs_per_second@{batch_size},U{num_negatives}"] = rates
        rows.append([fit_label(config, batch_size, num_negatives),
                     f"{statistics.median(rates):,.0f}",
                     f"{min(rates):,.0f}–{max(rates):,.0f}", target])
        print(rows[-1], flush=True)
    times = [time_to_recall(config, split, seed) for seed in range(3)]
    raw["time_to_paper_recall"] = times
    seconds = [t for t, _ in times]
    rows.append([f"training seconds to test Recall@50 ≥ {PAPER_RECALL_50} (the config: U "
                 f"{config.model.num_negatives}, batch {config.train.batch_size})",
                 f"{statistics.median(seconds):.1f}",
                 f"{min(seconds):.1f}–{max(seconds):.1f} "
                 f"(epochs {', '.join(str(e) for _, e in times)})", "≤ 10"])
    print(rows[-1], flush=True)
    if FLAGS.memory:
        peak, recall = peak_memory_gb("configs/citeulike_t_features.py")
        raw["cml_f_peak_rss_gb"] = peak
        rows.append(["peak memory (max RSS) of a CML+F training run", f"{peak:.2f} GB",
                     recall.lower(), "≤ 2.5 GB"])
    write_table("throughput", "CML training speed on citeulike-t (2 CPU cores)",
                ["measure", "median", "spread", "target"], rows, raw,
                "python benchmarks/throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    app.run(main)
