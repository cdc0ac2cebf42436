"""Training on several devices or machines with ``tf.distribute``, chosen by ``config.distribute``
and TensorFlow's ``TF_CONFIG``.

The same command runs on every task of a cluster; the ``TF_CONFIG`` environment variable (JSON,
TensorFlow's convention) tells each process which task it is::

    {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
     "task": {"type": "worker", "index": 0}}

``config.distribute.strategy``:

* ``"default"``: one device, no strategy.
* ``"mirrored"`` (``MirroredStrategy``): one process, a replica on every local GPU; each replica
  holds the whole model and the gradients of all replicas are combined every step (CML's sparse
  gradients by an all-gather of the touched rows).
* ``"multi_worker"`` (``MultiWorkerMirroredStrategy``): the same across processes, every
  ``worker`` task a process that trains; collectives over the network (RING on CPU, NCCL on
  GPU). The chief (the ``chief`` task, else worker 0) alone writes the workdir; the others write
  into scratch folders that they remove at the end. Each of them starts from a copy of the
  chief's checkpoints (hard links where the file system allows), so a restarted cluster resumes
  from the chief's latest checkpoint on every worker: the workdir must be on a file system all
  workers see.
* ``"parameter_server"`` (``ParameterServerStrategy``): the user and item tables and their
  AdaGrad accumulators are cut into row shards placed on the ``ps`` tasks
  (:class:`TablePartitioner`); ``worker`` tasks run training steps asynchronously, each reading
  and writing only the rows its step touches; the ``chief`` task is Keras' coordinator, which
  runs ``train_and_evaluate`` (it schedules the steps, validates, checkpoints and exports),
  while the ``worker`` and ``ps`` tasks only serve (:func:`serve`) until they are stopped.
* ``"auto"`` (default): ``parameter_server`` if ``TF_CONFIG`` has ``ps`` tasks,
  ``multi_worker`` if it has several ``chief``/``worker`` tasks, ``mirrored`` with several local
  GPUs, else ``default``.

One strategy object per kind serves a whole process: TensorFlow numbers the collectives of
every new ``MirroredStrategy`` from the same keys and keeps what it learnt of the previous
ones, so a second strategy whose collectives differ in shape aborts with "Shape mismatch in the
collective instance" (tensorflow#62790; ``tests/models/test_distributed.py`` reproduces it).
"""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from cml_tf import callbacks as cbs
from cml_tf.data.pipeline import batches_per_epoch, positive_pairs_dataset
from cml_tf.layers.embedding import shards

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "parameter_server")
_STRATEGIES = {}  # one strategy object of each kind per process (module docstring)


@dataclasses.dataclass
class Task:
    """This process's place in the cluster ``TF_CONFIG`` describes (empty: no cluster)."""

    cluster: dict   # job name -> list of "host:port"
    type: str       # "chief", "worker", "ps" or "" (no cluster)
    index: int
    rpc_layer: str = "grpc"

    @classmethod
    def from_environment(cls, environ=os.environ) -> "Task":
        text = environ.get("TF_CONFIG", "").strip()
        if not text:
            return cls({}, "", 0)
        try:
            tf_config = json.loads(text)
            cluster = {job: list(tasks) for job, tasks in tf_config.get("cluster", {}).items()}
            task = tf_config.get("task", {})
            task_type, index = str(task.get("type", "")), int(task.get("index", 0))
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"TF_CONFIG is not a cluster description of TensorFlow's form "
                             f"({error}): {text[:200]}") from error
        if cluster and task_type not in ("chief", "worker", "ps"):
            raise ValueError(f"TF_CONFIG: task type {task_type!r} is not supported (chief, "
                             "worker or ps)")
        if cluster and task_type not in cluster:
            raise ValueError(f"TF_CONFIG: this task's type {task_type!r} is not a job of its "
                             f"cluster ({', '.join(cluster)})")
        if cluster and not 0 <= index < len(cluster[task_type]):
            raise ValueError(f"TF_CONFIG: task index {index} is out of range for the "
                             f"{len(cluster[task_type])} {task_type} tasks")
        return cls(cluster, task_type, index, tf_config.get("rpc_layer", "grpc"))

    @property
    def trainers(self) -> int:
        """Tasks that train under multi_worker: chief and workers."""
        return len(self.cluster.get("chief", [])) + len(self.cluster.get("worker", []))

    @property
    def is_chief(self) -> bool:
        """TensorFlow's rule: the ``chief`` task, or worker 0 when there is none."""
        if not self.cluster or self.type == "chief":
            return True
        return self.type == "worker" and self.index == 0 and "chief" not in self.cluster


def strategy_name(requested: str, task: Task, local_gpus: int = None) -> str:
    """The strategy a run uses: ``requested`` itself, or what ``"auto"`` finds."""
    if requested not in STRATEGIES:
        raise ValueError(f"distribute.strategy must be one of {', '.join(STRATEGIES)}; got "
                         f"{requested!r}")
    if requested != "auto":
        return requested
    if "ps" in task.cluster:
        return "parameter_server"
    if task.trainers > 1:
        return "multi_worker"
    if local_gpus is None:
        local_gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if local_gpus > 1 else "default"


class TablePartitioner:
    """``variable_partitioner`` of the parameter-server strategy: embedding tables are cut into
    row shards, everything else stays whole.

    A table is a float variable of shape [n, d] with n one of ``rows`` (the numbers of users
    and items, set by :meth:`Distribution.scope` before the model is built). It gets one shard
    per ``min_shard_bytes`` (rounded up), at most ``max_shards``
    (``tf.distribute.experimental.partitioners.MinSizePartitioner``); shard i holds a
    contiguous block of rows, the first ``n mod shards`` one row more (TensorFlow's "div"
    layout, which ``tf.nn.embedding_lookup`` and the ``ShardedVariable`` scatters follow). The
    optimizer's accumulator of a shard is created beside it, on the same ps task. The
    negative sampler's keys and filter, the feature MLP and the random generator's state (which
    must not be sharded) are not tables.
    """

    def __init__(self, max_shards: int, min_shard_bytes: int):
        self.rows = set()
        self._partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=min_shard_bytes, max_shards=max_shards)

    def __call__(self, shape, dtype):
        shape = tf.TensorShape(shape)
        if shape.rank == 2 and tf.as_dtype(dtype).is_floating and shape[0] in self.rows:
            return self._partitioner(shape, dtype)
        return [1] * shape.rank


class EpochNanGuard(cbs.NanGuard):
    """:class:`~cml_tf.callbacks.NanGuard` looking at each epoch's mean loss (NaN or infinite
    as soon as one step's was): Keras' parameter-server path allows no per-batch callbacks, whose
    logs would have to be fetched from the workers every step. ``diverged_at`` is (epoch, the
    number of steps of an epoch)."""

    on_train_batch_end = tf.keras.callbacks.Callback.on_train_batch_end

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = (epoch + 1, self.params.get("steps"))
            self.model.stop_training = True


@dataclasses.dataclass
class Distribution:
    """The strategy of a run and this process's part in it (:func:`from_config`)."""

    name: str
    task: Task
    strategy: tf.distribute.Strategy
    partitioner: TablePartitioner = None
    scratch: pathlib.Path = None  # a non-chief worker's own workdir

    @property
    def is_chief(self) -> bool:
        return self.task.is_chief

    @property
    def serves_only(self) -> bool:
        """A parameter-server cluster's worker or ps task: it runs a server, not the run."""
        return self.name == "parameter_server" and self.task.type in ("worker", "ps")

    @property
    def sharded(self) -> bool:
        return self.name == "parameter_server"

    def task_workdir(self, workdir, overwrite: bool = False) -> str:
        """Where this process writes: ``workdir`` for the chief; for another worker a scratch
        folder in the temporary directory holding a copy of the chief's config and checkpoints
        (none with ``overwrite``), so it resumes from the same epoch as the chief;
        :meth:`finish` removes it."""
        if self.is_chief:
            return workdir
        source = pathlib.Path(workdir).absolute()
        # Named after the workdir and the task: a rerun replaces what a killed worker left.
        digest = hashlib.sha1(str(source).encode()).hexdigest()[:12]
        self.scratch = pathlib.Path(tempfile.gettempdir(),
                                    f"cml_tf_{digest}_{self.task.type}{self.task.index}")
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        if not overwrite and (source / "checkpoints").is_dir():
            shutil.copy2(source / "config.json", self.scratch / "config.json")
            shutil.copytree(source / "checkpoints", self.scratch / "checkpoints",
                            copy_function=_link_or_copy)
        logging.info("%s %d of %d: writing into the scratch folder %s (the chief writes %s)",
                     self.task.type, self.task.index, self.task.trainers, self.scratch, workdir)
        return str(self.scratch)

    def scope(self, table_rows=()):
        """The strategy's scope, in which the model and its optimizer are built; ``table_rows``:
        the row counts of the tables to shard (parameter_server)."""
        if self.partitioner is not None:
            self.partitioner.rows = {int(n) for n in table_rows}
        return self.strategy.scope()

    def fit_input(self, train, batch_size: int, seed: int, first_epoch: int = 0):
        """``model.fit``'s input and its ``steps_per_epoch`` (one pass over the pairs).

        Under parameter_server every worker reads its own endless stream of shuffled batches
        (seeded by its input pipeline), and an epoch is as many steps, taken by whichever worker
        is free, as one pass over the pairs has batches. Elsewhere the endless stream of global
        batches of epochs ``first_epoch``, ``first_epoch + 1``, ... (each shuffled by the seed
        and the epoch, so a resumed run reads what the uninterrupted one read) goes to Keras,
        which splits each batch between the replicas (and workers).
        """
        steps = batches_per_epoch(train, batch_size)
        if self.name != "parameter_server":
            return positive_pairs_dataset(train, batch_size, seed=seed,
                                          first_epoch=first_epoch), steps

        def per_worker(context: tf.distribute.InputContext):
            return positive_pairs_dataset(
                train, batch_size, seed=seed * 100_003 + context.input_pipeline_id).repeat()

        return tf.keras.utils.experimental.DatasetCreator(per_worker), steps

    def nan_guard(self) -> cbs.NanGuard:
        return EpochNanGuard() if self.name == "parameter_server" else cbs.NanGuard()

    def verbosity(self, verbose: int) -> int:
        """Keras' parameter-server path refuses the progress bar (verbose=1)."""
        return 2 if verbose == 1 and self.name == "parameter_server" else verbose

    def describe(self, model=None) -> dict:
        """What metrics.json records: the strategy, replicas, workers, ps tasks and shards."""
        info = {"strategy": self.name, "replicas": int(self.strategy.num_replicas_in_sync)}
        if self.name == "multi_worker":
            info["workers"] = max(self.task.trainers, 1)
        if self.name == "parameter_server":
            info["workers"] = len(self.task.cluster.get("worker", []))
            info["ps"] = len(self.task.cluster.get("ps", []))
            if model is not None:
                info["table_shards"] = table_shards(model)
        return info

    def finish(self):
        """Removes a non-chief worker's scratch folder."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def table_shards(model) -> dict:
    """{"users": n, "items": m}: the number of variables holding each of the model's tables."""
    counts = {}
    for name, attribute in (("users", "user_embedding"), ("items", "item_embedding")):
        table = getattr(getattr(model, attribute, None), "embeddings", None)
        if table is not None:
            counts[name] = len(shards(table))
    return counts


def from_config(config, environ=os.environ) -> Distribution:
    """The distribution ``config.distribute`` and ``TF_CONFIG`` ask for.

    Call it before TensorFlow runs its first operation: ``MultiWorkerMirroredStrategy``
    configures the runtime's collectives and refuses once the runtime is up.
    """
    distribute_config = config.distribute
    task = Task.from_environment(environ)
    name = strategy_name(distribute_config.strategy, task)
    if name == "parameter_server":
        missing = [job for job in ("ps", "worker", "chief") if not task.cluster.get(job)]
        if missing:
            raise ValueError(f"distribute.strategy 'parameter_server' needs TF_CONFIG with "
                             f"chief, worker and ps tasks; it has no {', '.join(missing)} task")
        if distribute_config.max_shards < 0 or distribute_config.min_shard_bytes < 1:
            raise ValueError("distribute.max_shards must be >= 0 and distribute.min_shard_bytes "
                             ">= 1")
        if config.train.jit_compile:
            raise ValueError("train.jit_compile: XLA cannot compile a step that reads tables "
                             "sharded over parameter servers")
    elif task.type == "ps":
        raise ValueError(f"TF_CONFIG makes this a ps task, which only distribute.strategy "
                         f"'parameter_server' has (this run uses {name!r})")
    distribution = Distribution(name, task, None)
    if distribution.serves_only:
        return distribution
    key = (name, json.dumps(task.cluster, sort_keys=True), task.type, task.index)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _make_strategy(name, task, distribute_config)
    distribution.strategy, distribution.partitioner = _STRATEGIES[key]
    logging.info("distribution: %s, %d replica(s) in sync%s", name,
                 distribution.strategy.num_replicas_in_sync,
                 f", task {task.type} {task.index}" if task.cluster else "")
    return distribution


def _make_strategy(name: str, task: Task, distribute_config):
    if name == "default":
        return tf.distribute.get_strategy(), None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), None
    if name == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(), None
        except RuntimeError as error:  # the runtime was initialised before the strategy
            raise ValueError(f"distribute.strategy 'multi_worker' must be set up before "
                             f"TensorFlow runs anything in this process ({error})") from error
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    partitioner = TablePartitioner(distribute_config.max_shards or len(task.cluster["ps"]),
                                   distribute_config.min_shard_bytes)
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner), \
        partitioner


def serve(task: Task):
    """Runs this ``worker`` or ``ps`` task's TensorFlow server until the process is stopped."""
    # A worker whose peer (e.g. a ps task) is gone fails the step at once; the coordinator
    # then reschedules it (TensorFlow's advice for parameter-server clusters).
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(tf.train.ClusterSpec(task.cluster), job_name=task.type,
                                  task_index=task.index, protocol=task.rpc_layer, start=True)
    logging.info("%s %d of the parameter-server cluster: serving at %s until stopped",
                 task.type, task.index, task.cluster[task.type][task.index])
    server.join()


def _link_or_copy(source, destination):
    """A checkpoint's data and index files (TensorFlow never rewrites them in place) are hard
    linked where the file system allows; everything else is copied. A file that vanished
    since it was listed (the chief replacing a state file) is skipped."""
    name = os.path.basename(source)
    if name.endswith(".index") or ".data-" in name:
        try:
            os.link(source, destination)
            return destination
        except OSError:  # another file system: copy
            pass
    try:
        return shutil.copy2(source, destination)
    except FileNotFoundError:
        return destination
