"""Loopback clusters of TensorFlow processes (``python -m cml_tf.launch``) on a small synthetic
set: ``multi_worker`` with two workers, ``parameter_server`` with two workers and two ps tasks;
and one process hosting a parameter-server cluster, to look inside a sharded training step.

Tolerance on validation recall@50 against one process with the same config: 0.05. The runs
differ as two seeds of one process do (other negatives are drawn: each replica has its own
random stream, and the parameter-server workers step asynchronously). Five seeds of this config
in one process (``--config.seed=0..4``, the model's defaults of 2026-12) ended at 0.7067,
0.6846, 0.7068, 0.6809 and 0.6795 at epoch 12, still rising: standard deviation 0.014, so two
runs differ with a standard deviation of about 0.019 and 0.05 is 2.6 of those. (The former 0.03
was set when three seeds agreed within 0.004; a parameter-server run 0.031 from one process
failed it.) A table update lost on a shard costs far more: epoch 4 is at 0.55.

Every process and port is cleaned up, also when a test fails: the launcher stops its tasks when
it ends, and each test kills what is left (the launcher, then every task it reported).
"""

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 12
FLAGS = ["--config.data.synthetic.n_users=401", "--config.data.synthetic.n_items=301",
         "--config.model.dim=16", f"--config.train.epochs={EPOCHS}",
         "--config.train.batch_size=256", "--config.train.eval_every=4",
         "--config.train.verbose=2", "--config.viz.enabled=False",
         "--config.distribute.min_shard_bytes=1024"]
NO_EXPORT = ["--config.export.enabled=False"]
EXPORT = ["--config.export.index=brute_force", "--config.export.k=20",
          "--config.export.report_users=50", "--config.export.report_queries=5"]
TOLERANCE = 0.05
TIMEOUT = 900  # seconds for one cluster run; a loaded 2-core machine is slow
TASK_LINE = re.compile(r"cml_tf\.launch: (\w+) (\d+) at 127\.0\.0\.1:(\d+): pid (\d+)")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """validation recall@50 of one process with the flags (started at once, waited for when
    asked, so that it runs beside the first cluster)."""
    workdir = tmp_path_factory.mktemp("one_process") / "run"
    process = subprocess.Popen([sys.executable, "-m", "cml_tf.main", f"--workdir={workdir}",
                                *FLAGS, *NO_EXPORT], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)

    def recall():
        _, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err[-3000:]
        return json.loads((workdir / "metrics.json").read_text())["valid"]["recall@50"]

    yield recall
    if process.poll() is None:
        process.kill()
        process.wait()


class Launch:
    """A running ``cml_tf.launch`` whose output goes to a file; ``tasks`` parses what it said."""

    def __init__(self, tmp_path, name, workers, ps=0, extra=NO_EXPORT):
        self.workdir = tmp_path / "run"
        self.output = tmp_path / f"{name}.out"
        env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))  # the workers' scratch folders
        (tmp_path / "tmp").mkdir(exist_ok=True)
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cml_tf.launch", f"--workers={workers}", f"--ps={ps}",
                 f"--log_dir={tmp_path / name}", "--", f"--workdir={self.workdir}", *FLAGS,
                 *extra], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log_dir = tmp_path / name

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def tasks(self) -> dict:
        """(type, index) -> (pid, port) of every task the launcher started."""
        return {(m[1], int(m[2])): (int(m[4]), int(m[3])) for m in TASK_LINE.finditer(self.text())}

    def wait(self, timeout=TIMEOUT) -> int:
        return self.process.wait(timeout=timeout)

    def kill_all(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # it stops its tasks
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid, _ in self.tasks().values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def launched(*args, **kwargs):
    run = Launch(*args, **kwargs)
    try:
        yield run
    finally:
        run.kill_all()


def assert_cluster_gone(run: Launch):
    """Every task process has ended and nothing listens on the cluster's ports."""
    tasks = run.tasks()
    assert tasks, run.text()[-3000:]
    for (task, index), (pid, port) in tasks.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # fails while a process listens there


def table_norms(workdir: pathlib.Path) -> dict:
    """Largest row norm of each table in the workdir's latest checkpoint."""
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    norms = {}
    for name in reader.get_variable_to_shape_map():
        for table in ("user_embedding", "item_embedding"):
            if f"model/{table}/embeddings/.ATTRIBUTES" in name:
                norms[table] = float(np.linalg.norm(reader.get_tensor(name), axis=1).max())
    return norms


def wait_for(condition, run: Launch, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while not condition():
        assert run.process.poll() is None, run.text()[-3000:]
        assert time.time() < deadline, run.text()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
def test_multi_worker_resumes_after_a_killed_worker_and_matches_one_process(one_process,
                                                                            tmp_path):
    with launched(tmp_path, "first", workers=2) as first:
        # The state file is written after the checkpoint it names.
        wait_for((first.workdir / "checkpoints" / "checkpoint").exists, first)
        wait_for(lambda: ("worker", 1) in first.tasks(), first)
        os.kill(first.tasks()[("worker", 1)][0], signal.SIGKILL)
        assert first.wait() == 1  # the launcher stopped the chief (or it failed) and said why
        assert "worker 1 ended with status -9; stopping the cluster" in first.text()
        assert_cluster_gone(first)
    # Whether the chief noticed the lost worker before the launcher stopped it or not, it
    # said so in one line (cml_tf.main.cluster_error), not with a traceback.
    assert "Traceback" not in first.text()  # the chief's output is the launcher's
    assert not (first.workdir / "metrics.json").exists()

    with launched(tmp_path, "second", workers=2) as second:
        assert second.wait() == 0, second.text()[-3000:]
        assert_cluster_gone(second)
    resumed = re.search(r"resuming from \S+ \(epoch (\d+)\)", second.text())
    assert resumed and 1 <= int(resumed.group(1)) < EPOCHS, second.text()[-3000:]
    # The other worker resumed from the same epoch, from its copy of the chief's checkpoint.
    assert f"(epoch {resumed.group(1)})" in (second.log_dir / "worker-1.log").read_text()

    metrics = json.loads((second.workdir / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS
    assert metrics["distribute"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2}
    assert abs(metrics["valid"]["recall@50"] - one_process()) <= TOLERANCE
    assert max(table_norms(second.workdir).values()) <= 1 + 1e-5
    # The chief alone wrote the workdir; the other worker removed its scratch folder (and
    # replaced the one the killed worker left).
    assert sorted(p.name for p in second.workdir.iterdir()) == [
        "checkpoints", "config.json", "metrics.json", "tensorboard"]
    assert not list((tmp_path / "tmp").glob("cml_tf_*"))


@pytest.mark.slow
def test_parameter_server_cluster_shards_the_tables_and_exports_like_one_model(one_process,
                                                                              tmp_path):
    with launched(tmp_path, "ps", workers=2, ps=2, extra=EXPORT) as run:
        assert run.wait() == 0, run.text()[-3000:]
        assert set(run.tasks()) == {("chief", 0), ("worker", 0), ("worker", 1), ("ps", 0),
                                    ("ps", 1)}
        assert_cluster_gone(run)  # the launcher stopped the servers when the chief ended
    metrics = json.loads((run.workdir / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS
    assert metrics["distribute"] == {"strategy": "parameter_server", "replicas": 1,
                                     "workers": 2, "ps": 2,
                                     "table_shards": {"users": 2, "items": 2}}
    assert abs(metrics["valid"]["recall@50"] - one_process()) <= TOLERANCE
    assert max(table_norms(run.workdir).values()) <= 1 + 1e-5

    # The same weights restored into an unsharded model (the checkpoint stores each table
    # whole, in slices) export the same SavedModel as the chief's sharded model did.
    from cml_tf import export  # pylint: disable=import-outside-toplevel
    again = export.export_workdir(run.workdir, index="brute_force", k=20, report_users=50,
                                  report_queries=5)
    sharded = tf.saved_model.load(metrics["export"]["path"])
    unsharded = tf.saved_model.load(again["path"])
    for name in ("user_vectors", "item_vectors"):
        vectors = getattr(sharded, name).numpy()
        np.testing.assert_array_equal(vectors, getattr(unsharded, name).numpy())
        assert np.linalg.norm(vectors, axis=1).max() <= 1 + 1e-5
    users = tf.constant([str(u) for u in range(0, 401, 40)])
    a = sharded.signatures["serving_default"](user_id=users)
    b = unsharded.signatures["serving_default"](user_id=users)
    for key in ("item_ids", "scores", "known"):
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


SHARDED_STEP = textwrap.dedent("""
    import json, os
    import cml_tf
    import numpy as np
    import scipy.sparse as sp
    import tensorflow as tf
    from cml_tf import distribute, launch
    from cml_tf.config import get_config
    from cml_tf.data.split import split_per_user
    from cml_tf.data.synthetic import make_synthetic
    from cml_tf.layers.embedding import lookup, shards
    from cml_tf.models import CML
    from cml_tf.optimizers import SparseAdagrad

    # Two workers and two ps tasks as servers of this process (enough inter-op threads for all
    # of them), and this process the chief: TF_CONFIG as the launcher writes it.
    cluster = launch.cluster_spec(workers=2, ps=2)
    threads = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=8)
    servers = [tf.distribute.Server(tf.train.ClusterSpec(cluster), job, i, config=threads)
               for job in ("worker", "ps") for i in range(2)]
    os.environ["TF_CONFIG"] = launch.tf_config(cluster, "chief", 0)
    config = get_config()
    config.distribute.min_shard_bytes = 64
    distribution = distribute.from_config(config)

    train = split_per_user(make_synthetic(n_users=200, n_items=151, n_clusters=5,
                                          mean_per_user=12, seed=0), seed=0).train
    # Three users beyond the data: no pair names them, so no step may touch their rows.
    sentinels = np.arange(train.n_users, train.n_users + 3)
    known = sp.vstack([train.matrix, sp.csr_matrix((3, train.n_items))]).tocsr()
    gradients = {}

    class Recording(SparseAdagrad):
        def update_step(self, gradient, variable):  # runs when the step is traced
            gradients[self._var_key(variable)] = type(gradient).__name__
            super().update_step(gradient, variable)

    with distribution.scope(table_rows=(train.n_users + 3, train.n_items)):
        model = CML(train.n_users + 3, train.n_items, dim=8, margin=1.0,
                    known_positives=known, seed=0, jit_sampling=False)
        model.compile(optimizer=Recording(0.1))
    users = model.user_embedding.embeddings
    users.scatter_update(tf.IndexedSlices(  # outside the ball: any censoring would show
        tf.constant(np.full((3, 8), 2 / np.sqrt(8)), tf.float32), tf.constant(sentinels)))
    x, steps = distribution.fit_input(train, 128, seed=0)
    model.fit(x, epochs=2, steps_per_epoch=steps, verbose=0)

    result = {"steps": int(model.optimizer.iterations), "shards": {},
              "sampler_sharded": len(shards(model.sampler.keys)) > 1}
    for name, table in (("users", users), ("items", model.item_embedding.embeddings)):
        parts = shards(table)
        whole = np.concatenate([p.numpy() for p in parts])
        rows = np.random.default_rng(0).integers(0, len(whole), 50)
        norms = np.linalg.norm(whole, axis=1)
        optimizer = model.optimizer
        slots = [optimizer._accumulators[optimizer._index_dict[optimizer._var_key(p)]]
                 for p in parts]
        result["shards"][name] = {
            "rows": [int(p.shape[0]) for p in parts],
            "gradients": [gradients[optimizer._var_key(p)] for p in parts],
            "devices": [p.device for p in parts],
            "slot_devices": [s.device for s in slots],
            "lookup_in_order": bool(np.array_equal(lookup(table, rows).numpy(), whole[rows])),
            "max_norm": float(np.delete(norms, sentinels if name == "users" else []).max())}
        if name == "users":
            accumulator = np.concatenate([s.numpy() for s in slots])
            result["sentinel_norms"] = norms[sentinels].tolist()
            result["sentinel_accumulators"] = np.unique(accumulator[sentinels]).tolist()
    print("RESULT", json.dumps(result))
""")


@pytest.mark.slow
def test_a_sharded_step_reads_and_writes_only_the_rows_it_touches():
    done = subprocess.run([sys.executable, "-c", SHARDED_STEP], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["steps"] > 0 and not result["sampler_sharded"]
    for name, rows in (("users", [102, 101]), ("items", [76, 75])):
        table = result["shards"][name]
        assert table["rows"] == rows  # TensorFlow's "div" layout: the first shard one row more
        assert len(set(table["devices"])) == 2  # one shard on each ps task
        assert table["slot_devices"] == table["devices"]  # AdaGrad's accumulator beside it
        assert table["lookup_in_order"]
        assert table["max_norm"] <= 1 + 1e-5  # every row written through either worker
        assert table["gradients"] == ["IndexedSlices"] * 2  # each shard's gradient is sparse
    # Untouched rows: no step read-and-censored or updated the whole table or its slots.
    assert result["sentinel_norms"] == pytest.approx([2.0] * 3, abs=1e-6)
    assert result["sentinel_accumulators"] == pytest.approx([0.1])


@pytest.mark.slow
def test_ctrl_c_stops_every_task_and_exits_130(tmp_path):
    with launched(tmp_path, "interrupted", workers=2) as run:
        wait_for(lambda: len(run.tasks()) == 2, run)
        run.process.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 130
        assert "interrupted; stopping the cluster" in run.text()
        assert_cluster_gone(run)
    assert not (run.workdir / "metrics.json").exists()
