"""A TensorFlow cluster on this machine, for trying a distributed run:
``python -m cml_tf.launch --workers=N [--ps=M] -- <the flags of cml_tf.main>``.

Every task is a local process running ``python -m cml_tf.main`` with the given flags and its own
``TF_CONFIG``, on free loopback ports (127.0.0.1 only). Without ``--ps`` the cluster is N
workers, worker 0 the chief (``multi_worker``); with ``--ps=M`` it is a chief (the coordinator),
N workers and M ps tasks (``parameter_server``). The chief's output is this command's output;
the other tasks write theirs to ``--log_dir`` (one file each). When the chief ends, or another
task fails, or on Ctrl-C, every task is stopped; the exit status is the chief's (1 when another
task failed while the chief still ran, 130 on Ctrl-C).

A cluster manager (Kubernetes, Slurm, ...) does this job on real machines: it starts the same
command on every host with that host's ``TF_CONFIG`` (README, "Scaling out"). TensorFlow has
no launcher of its own, hence this one, small and meant for tests and try-outs.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

STOP_SECONDS = 10  # a task gets this long to end after SIGTERM, then it is killed


def free_ports(n: int) -> list:
    """n distinct free TCP ports on 127.0.0.1 (held together while chosen, then released)."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cluster_spec(workers: int, ps: int = 0) -> dict:
    """The cluster of the launched tasks: {job: ["127.0.0.1:port", ...]}."""
    jobs = [("worker", workers)] if not ps else [("chief", 1), ("worker", workers), ("ps", ps)]
    ports = iter(free_ports(sum(n for _, n in jobs)))
    return {job: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for job, n in jobs}


def tasks(cluster: dict) -> list:
    """(type, index) of every task, the chief first."""
    chief = ("chief", 0) if "chief" in cluster else ("worker", 0)
    others = [(job, i) for job, addresses in cluster.items() for i in range(len(addresses))
              if (job, i) != chief]
    return [chief] + others


def tf_config(cluster: dict, task_type: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


class Cluster:
    """The running task processes; ``stop()`` ends all that still run."""

    def __init__(self, cluster: dict):
        self.cluster, self.chief = cluster, tasks(cluster)[0]
        self.processes = {}  # (type, index) -> Popen
        self.logs = {}

    def start(self, main_args: list, log_dir: str):
        cluster = self.cluster
        for task in tasks(cluster):
            env = dict(os.environ, TF_CONFIG=tf_config(cluster, *task))
            output = None  # the chief's output is ours
            if task != self.chief:
                self.logs[task] = os.path.join(log_dir, f"{task[0]}-{task[1]}.log")
                output = open(self.logs[task], "w")  # noqa: SIM115 (the process owns it)
            # Own session: Ctrl-C reaches this launcher only, which then stops the tasks.
            self.processes[task] = subprocess.Popen(
                [sys.executable, "-m", "cml_tf.main", *main_args], env=env, stdout=output,
                stderr=subprocess.STDOUT if output else None, start_new_session=True)
            if output is not None:
                output.close()
            where = f", log {self.logs[task]}" if task in self.logs else ""
            _say(f"{task[0]} {task[1]} at {cluster[task[0]][task[1]]}: pid "
                 f"{self.processes[task].pid}{where}")

    def wait(self) -> int:
        """Until the chief ends or another task fails; returns the exit status to give: the
        chief's, or 1 when another task failed while the chief still ran."""
        while True:
            chief = self.processes[self.chief].poll()
            failed = [(task, process.returncode) for task, process in self.processes.items()
                      if task != self.chief and process.poll() not in (None, 0)]
            for (task_type, index), status in failed:
                _say(f"{task_type} {index} ended with status {status}; stopping the cluster. "
                     f"Its last lines:\n{_tail(self.logs[(task_type, index)])}")
            if chief is not None:
                return chief if chief >= 0 else 128 - chief
            if failed:
                return 1
            time.sleep(0.2)

    def stop(self):
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            _signal(process, signal.SIGTERM)
        deadline = time.time() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal(process, signal.SIGKILL)
                process.wait()


def _signal(process, signum):
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _tail(path, lines: int = 15) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:]).rstrip()


def _say(text):
    print(f"cml_tf.launch: {text}", file=sys.stderr, flush=True)


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m cml_tf.launch",
        description="Runs python -m cml_tf.main as a TensorFlow cluster of local processes.",
        usage="python -m cml_tf.launch --workers=N [--ps=M] [--log_dir=DIR] -- "
              "<flags of cml_tf.main>")
    parser.add_argument("--workers", type=int, required=True, help="worker tasks (>= 1)")
    parser.add_argument("--ps", type=int, default=0,
                        help="parameter-server tasks; > 0 adds a chief and uses parameter_server")
    parser.add_argument("--log_dir", default=None,
                        help="where the non-chief tasks' output goes (default: a new temporary "
                             "folder)")
    args, main_args = parser.parse_known_args(argv)
    if main_args[:1] == ["--"]:
        main_args = main_args[1:]
    if args.workers < 1 or args.ps < 0:
        parser.error("--workers must be >= 1 and --ps >= 0")
    return args, main_args


def main(argv=None) -> int:
    args, main_args = parse(sys.argv[1:] if argv is None else argv)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="cml_tf_launch_")
    os.makedirs(log_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # e.g. from a job scheduler: as Ctrl-C
    # Also when started in the background by a shell without job control, which starts it with
    # SIGINT ignored (and Python then installs no KeyboardInterrupt handler).
    signal.signal(signal.SIGINT, _interrupt)
    cluster = Cluster(cluster_spec(args.workers, args.ps))
    try:
        cluster.start(main_args, log_dir)
        status = cluster.wait()
    except KeyboardInterrupt:
        _say("interrupted; stopping the cluster")
        status = 130
    finally:
        cluster.stop()
    return status


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
