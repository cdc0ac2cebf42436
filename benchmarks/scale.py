"""EchoNest's size on this machine: the default run of configs/synthetic_echonest.py, every phase
timed against the targets of issue 14.

    python benchmarks/scale.py [--scale=1.0] [--workdir=DIR] [--overwrite] \
        [-- --config.train.epochs=4 ...]

Runs the normal command line, ``python -m cml_tf.main --config=configs/synthetic_echonest.py``
(arguments after ``--`` are passed on), in a child process, stamps every line of its output on
arrival and measures its peak memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the
child's largest resident set). The phases come from the run's metrics.json and its log:

* time to the first epoch: from the launch to Keras' "Epoch 1/" line (start-up, imports, data,
  model and sampler set-up), and to the end of that epoch (its tracing included);
* data generation + split: ``load_seconds``;
* training epochs (steps only) and pairs/s: ``epoch_seconds``, ``train_pairs_per_second``
  (where metrics.json has no ``epoch_seconds`` list yet: Keras' epoch lines, whole seconds
  with that epoch's validation pass, and the table says so);
* validation passes (``train.valid_users`` sampled users): the ``valid_eval_seconds`` list, else
  the seconds each pass logs;
* the final test, exact over every user and item: ``test_eval_seconds``;
* pictures: from the log line that ends the test to the export's start;
* the export with its index report: ``export.seconds``;
* checkpoints, TensorBoard and the first epoch's tracing: what ``fit`` took beyond its steps
  and validation passes;
* the whole run: the child's wall time, start-up and imports included.

Then it draws the data again (in this process, after the child has ended) to report the
statistics matched to the paper's Table 1. Writes benchmarks/results/scale.{md,json} (with
``--scale`` other than 1: scale_<scale>.{md,json}); existing result files are replaced only with
``--overwrite``. The figures are only meaningful on a machine the run has to itself: the table
states the load average seen just before the launch.

Safe to rerun: with ``--workdir`` the measured run (its stamped log, memory samples and
metrics.json) is kept in DIR/scale_run.json, and a rerun with the same DIR and flags writes the
table from it without training again. An interrupted run is never resumed (a resumed run's
timings would be partial): its DIR is refused with one line, and nothing in it is removed.
Without ``--workdir`` the run goes to a temporary folder removed afterwards.
"""

import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import app, flags

from common import REPO, RESULTS, load_config, write_table

flags.DEFINE_float("scale", 1.0, "data.synthetic.scale of the run (1: EchoNest's size).")
flags.DEFINE_string("workdir", None, "Keep the run's workdir and its record here (default: a "
                    "temporary one, removed afterwards); a finished run there is not run again.")
flags.DEFINE_bool("overwrite", False, "Replace existing benchmarks/results/scale*.{md,json}.")
FLAGS = flags.FLAGS

CONFIG = "configs/synthetic_echonest.py"
TARGETS = {  # issue 14, item 1 (seconds, pairs/s, GB)
    "data": 60, "epoch": 30, "pairs": 250_000, "valid": 30, "test": 600, "export": 180,
    "total": 1200, "rss": 4.0}
RECORD = "scale_run.json"  # in --workdir: the measured run, so a rerun need not train again
PAPER = {"users": 766_882, "items": 260_417, "interactions": 7_261_443, "concentration": 0.6588}


def run_cli(workdir, extra):
    """Runs the command line; returns ([(seconds since start, line)], wall seconds, peak GB,
    [(seconds since start, resident GB)] sampled every 0.2 s)."""
    command = [sys.executable, "-u", "-m", "cml_tf.main", f"--config={CONFIG}",
               f"--workdir={workdir}", f"--config.data.synthetic.scale={FLAGS.scale}", *extra]
    print("running:", " ".join(command[1:]), flush=True)
    start = time.monotonic()
    lines, memory = [], []
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as child:
        sampler = threading.Thread(target=sample_memory, args=(child, start, memory), daemon=True)
        sampler.start()
        for line in child.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            print(f"[{lines[-1][0]:7.1f}s] {lines[-1][1]}", flush=True)
    wall = time.monotonic() - start
    if child.returncode:
        sys.exit(f"error: the run failed with status {child.returncode}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    return lines, wall, peak_gb, memory


def sample_memory(child, start, out):
    """Appends (seconds, resident GB) of ``child`` until it ends (Linux' /proc; else nothing)."""
    status = pathlib.Path(f"/proc/{child.pid}/status")
    while child.poll() is None:
        try:
            kb = next(int(line.split()[1]) for line in status.read_text().splitlines()
                      if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            return
        out.append((time.monotonic() - start, kb / 1024 ** 2))
        time.sleep(0.2)


def phase_peaks(memory, boundaries):
    """Largest sampled resident GB within each named phase ``[(name, end seconds)]``."""
    peaks, begin = {}, 0.0
    for name, end in boundaries:
        if end is None:
            continue
        inside = [gb for t, gb in memory if begin <= t <= end]
        peaks[name] = round(max(inside), 2) if inside else None
        begin = end
    return peaks


def first_time(lines, pattern):
    """Seconds at the first log line matching ``pattern`` (None if none does)."""
    regex = re.compile(pattern)
    return next((t for t, line in lines if regex.search(line)), None)


def per_pass_seconds(metrics, key, lines, pattern):
    """One figure per epoch or validation pass: metrics.json's list under ``key`` (CONTRACTS.md
    item 2), else the first group of ``pattern`` in each log line that has it."""
    value = metrics.get(key)
    if isinstance(value, list):
        return value
    regex = re.compile(pattern)
    return [float(m.group(1)) for _, line in lines for m in [regex.search(line)] if m]


def sampled_users(metrics, config):
    """How many users the validation passes scored."""
    users = (metrics.get("valid") or {}).get("users")
    if config.train.valid_users and users is not None:
        return f"{users:,} sampled users"
    return "every user" if users is None else f"all {users:,} users"


def data_statistics(config):
    """What the paper's Table 1 reports, for the data this config draws."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from cml_tf.data.from_config import load_data  # pylint: disable=import-outside-toplevel
    split = load_data(config.data)
    matrix = split.train.matrix + split.valid.matrix + split.test.matrix
    counts = np.sort(np.asarray(matrix.sum(axis=0)).ravel())[::-1]
    top = int(0.05 * len(counts))
    return {"users": matrix.shape[0], "items": matrix.shape[1],
            "interactions": int(matrix.nnz),
            "concentration": float(counts[:top].sum() / counts.sum()),
            "train": split.train.n_interactions,
            "users_with_test_items": int((np.diff(split.test.matrix.indptr) > 0).sum()),
            "users_with_validation_items": int((np.diff(split.valid.matrix.indptr) > 0).sum())}


def seconds(value):
    return f"{value:.1f} s" if value < 120 else f"{value:.0f} s ({value / 60:.1f} min)"


def verdict(value, target, lower_is_better=True):
    if value is None:
        return "not measured"
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "MISSED"


def measured_run(extra):
    """The measured run as a dict (scale, extra_flags, load_average, lines, wall, peak_gb,
    memory, metrics, config): a new run, or the finished one recorded in --workdir."""
    if FLAGS.workdir is None:
        with tempfile.TemporaryDirectory(prefix="cml_scale_") as workdir:
            return new_run(pathlib.Path(workdir), extra)
    workdir = pathlib.Path(FLAGS.workdir).resolve()
    record_path = workdir / RECORD
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if (record["scale"], record["extra_flags"]) != (FLAGS.scale, extra):
            sys.exit(f"error: {workdir} holds a run with --scale={record['scale']:g} and flags "
                     f"{record['extra_flags']}, not these; choose another --workdir")
        print(f"the run in {workdir} has finished: its table from {record_path} (remove that "
              "folder to measure again)", flush=True)
        return record
    if (workdir / "run").exists():
        sys.exit(f"error: {workdir / 'run'} holds an unfinished run (resumed, its timings would "
                 "be partial); remove it or choose another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    record = new_run(workdir, extra)
    record_path.write_text(json.dumps(record))
    return record


def new_run(workdir, extra):
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    lines, wall, peak_gb, memory = run_cli(workdir / "run", extra)
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    config = json.loads((workdir / "run" / "config.json").read_text())
    return {"scale": FLAGS.scale, "extra_flags": extra, "load_average": load_average,
            "lines": lines, "wall": wall, "peak_gb": peak_gb, "memory": memory,
            "metrics": metrics, "config": config}


def main(argv):
    extra = argv[1:]
    name = "scale" if FLAGS.scale == 1 else f"scale_{FLAGS.scale:g}"
    present = [path for path in (RESULTS / f"{name}.md", RESULTS / f"{name}.json")
               if path.exists()]
    if present and not FLAGS.overwrite:
        sys.exit(f"error: {present[0]} exists; pass --overwrite to replace it")
    run = measured_run(extra)
    lines, wall, peak_gb, memory, metrics = (run[key] for key in
                                             ("lines", "wall", "peak_gb", "memory", "metrics"))

    # Without metrics.json's lists: Keras' epoch lines and the validation callback's log lines.
    epochs = per_pass_seconds(metrics, "epoch_seconds", lines, r"^\s*\d+/\d+ - (\d+)s - ")
    valid = per_pass_seconds(metrics, "valid_eval_seconds", lines,
                             r"epoch \d+: validation.*, ([\d.]+)s\)")
    epochs_from = ("steps only" if "epoch_seconds" in metrics
                   else "Keras' epoch lines: whole seconds, validation passes included")
    fit = metrics.get("fit_seconds", metrics["train_seconds"])
    steps = metrics["train_seconds"] if "epoch_seconds" in metrics else sum(epochs)
    pairs = (metrics["train_pairs_per_second"] if "epoch_seconds" in metrics
             else metrics["data"]["train_interactions"] * len(epochs) / max(sum(epochs), 1e-9))
    export = (metrics.get("export") or {}).get("seconds")
    test_done, exported = first_time(lines, r"\] test: "), first_time(lines, r"\] exported ")
    pictures = (exported - export - test_done) if None not in (test_done, exported, export) \
        else None
    test = metrics.get("test_eval_seconds")
    export_start = exported - export if None not in (exported, export) else None
    peaks = phase_peaks(memory, [
        ("start-up and data", first_time(lines, r"\] data: ")),
        ("model", first_time(lines, r"\] training ")),
        ("training", first_time(lines, r"\] restored the weights|\] early stopping")),
        ("final validation and test", test_done), ("pictures", export_start),
        ("export", exported), ("end", wall)])
    where = ", ".join(f"{phase} {gb:.2f}" for phase, gb in peaks.items() if gb is not None)
    first_epoch = first_time(lines, r"^Epoch 1/")
    first_epoch_end = first_time(lines, r"^\s*\d+/\d+ - ")

    config = load_config(CONFIG)
    config.update(run["config"])  # the run's config.json: the extra flags applied
    stats = data_statistics(config)
    data_row = (f"{stats['users']:,} users, {stats['items']:,} items, "
                f"{stats['interactions']:,} interactions, {stats['concentration']:.1%} on the "
                f"top 5% of items; {stats['users_with_test_items']:,} users with test items")
    paper_row = (f"{PAPER['users']:,}, {PAPER['items']:,}, {PAPER['interactions']:,}, "
                 f"{PAPER['concentration']:.2%}")
    cores, load = os.cpu_count(), run["load_average"]
    rows = [
        ["machine", f"{cores} cores; 1-minute load average {load:.2f} at the launch"
         if load is not None else f"{cores} cores", "the run alone", ""],
        ["data (config, seed 0)", data_row, f"paper's Table 1: {paper_row}", ""],
        ["data generation + split", seconds(metrics["load_seconds"]), "≤ 60 s",
         verdict(metrics["load_seconds"], TARGETS["data"])],
        ["time to the first epoch (launch to its start; to its end)",
         f"{seconds(first_epoch)}; {seconds(first_epoch_end)}"
         if None not in (first_epoch, first_epoch_end) else "not in the log", "", ""],
        [f"training epoch, {epochs_from} (median; min–max)",
         f"{seconds(sorted(epochs)[len(epochs) // 2])} ({min(epochs):.1f}–{max(epochs):.1f} s, "
         f"{len(epochs)} epochs)", "≤ 30 s", verdict(max(epochs), TARGETS["epoch"])],
        [f"positive pairs/s ({epochs_from.split(':')[0]}, full tables)", f"{pairs:,.0f}",
         "≥ 250,000",
         verdict(pairs, TARGETS["pairs"], lower_is_better=False)],
        [f"validation pass ({sampled_users(metrics, config)}; max)",
         seconds(max(valid)) if valid else "none", "≤ 30 s",
         verdict(max(valid) if valid else None, TARGETS["valid"])],
        [f"test, exact ({stats['users_with_test_items']:,} users x {stats['items']:,} items)",
         seconds(test) if test is not None else "none", "≤ 10 min",
         verdict(test, TARGETS["test"])],
        ["export with its index report", seconds(export) if export is not None else "none",
         "≤ 3 min", verdict(export, TARGETS["export"])],
        ["pictures (t-SNE map, projector files, curves)",
         seconds(pictures) if pictures is not None else "none", "", ""],
        ["checkpoints, TensorBoard, tracing (fit beyond steps and validation)",
         seconds(fit - steps - sum(valid)) if "epoch_seconds" in metrics else
         "needs metrics.json's epoch_seconds", "", ""],
        [f"whole run ({metrics['epochs']} epochs, validation every {config.train.eval_every})",
         seconds(wall), "≤ 20 min", verdict(wall, TARGETS["total"])],
        ["peak memory (max RSS; sampled peak per phase, GB)",
         f"{peak_gb:.2f} GB ({where})" if where else f"{peak_gb:.2f} GB", "≤ 4 GB",
         verdict(peak_gb, TARGETS["rss"])],
    ]
    command = "python benchmarks/scale.py " + " ".join(sys.argv[1:])
    write_table(name, "EchoNest's size on one machine (configs/synthetic_echonest.py)",
                ["phase", "measured", "target", ""], rows,
                {"metrics": metrics, "wall_seconds": wall, "peak_rss_gb": peak_gb,
                 "epoch_seconds": epochs, "valid_eval_seconds": valid,
                 "pictures_seconds": pictures, "data": stats, "extra_flags": extra,
                 "load_average": load, "first_epoch_start_seconds": first_epoch,
                 "first_epoch_end_seconds": first_epoch_end,
                 "rss_peaks_gb": peaks, "rss_samples_gb": memory[::25],
                 "log": [f"{t:.1f}s {line}" for t, line in lines if "] " in line]}, command)


if __name__ == "__main__":
    app.run(main)
