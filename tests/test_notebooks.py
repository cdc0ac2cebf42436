"""The Colab notebooks: committed without outputs, and executed headless top to bottom.

CI runs each notebook in a Jupyter kernel (nbclient) with short parameters injected after its
``parameters`` cell, the way papermill does: a few epochs on citeulike-t from
../shared/data/citeulike-t, or on the synthetic fallback when that folder is absent. No cell may
fail; the notebooks' own asserts check test recall above a floor, and that the reloaded
SavedModel answers with the model's own top items.
"""

import inspect
import json
import os
import pathlib
import subprocess
import sys
import time

import nbformat
import pytest

from cml_tf.models import CML

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
NOTEBOOKS = ("cml_quickstart.ipynb", "cml_features.ipynb")

# Short runs: seconds of training instead of minutes. The floors are far below what these runs
# reach on citeulike-t (about 0.24 and 0.23) and on the synthetic fallback (about 0.5).
SHORT = {
    "cml_quickstart.ipynb": dict(EPOCHS=10, FEATURE_EPOCHS=4, EVAL_EVERY=5, MAP_ITEMS=500,
                                 RECALL_FLOOR=0.15, FRESH_PROCESS=True),
    "cml_features.ipynb": dict(EPOCHS=6, EVAL_EVERY=6, MAP_ITEMS=500, RECALL_FLOOR=0.15),
}


def load(name):
    return nbformat.read(COLAB / name, as_version=4)


def inject_parameters(notebook, parameters):
    """Adds a cell setting ``parameters`` right after the cell tagged "parameters" (papermill's
    convention, so later cells see the overrides)."""
    tagged = [i for i, cell in enumerate(notebook.cells)
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    source = "# Parameters injected by tests/test_notebooks.py\n" + "\n".join(
        f"{key} = {value!r}" for key, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(tagged[0] + 1, cell)
    return notebook


def execute(name, parameters, timeout=900):
    """Runs the notebook in a fresh python3 kernel from the colab/ folder; returns it run."""
    from nbclient import NotebookClient  # pylint: disable=import-outside-toplevel
    notebook = inject_parameters(load(name), parameters)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(COLAB)}})
    client.execute()
    return notebook


def text_output(notebook):
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def images(notebook):
    return sum(1 for cell in notebook.cells for output in cell.get("outputs", [])
               if "image/png" in output.get("data", {}))


def data_parameters(shared_data_dir, tmp_path):
    folder = shared_data_dir / "citeulike-t"
    if (folder / "users.dat").exists():
        return dict(DATA_DIR=str(folder), DOWNLOAD=False)
    # absent: the notebooks fall back to the synthetic data set (and say so)
    return dict(DATA_DIR=str(tmp_path / "no-citeulike-t"), DOWNLOAD=False)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    notebook = load(name)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert "widgets" not in notebook.metadata
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    first = notebook.cells[1]
    assert first.cell_type == "code" and "CML_TF_GIT_URL" in first.source
    assert "import cml_tf" in first.source and "TF_USE_LEGACY_KERAS" in first.source


def notebook_constants(name):
    """The module-level constants the notebook assigns (literal values only), by name."""
    import ast  # pylint: disable=import-outside-toplevel
    constants = {}
    for cell in load(name).cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        for node in ast.parse(source).body:
            if not isinstance(node, ast.Assign):
                continue
            target, value = node.targets[0], node.value
            names = [target] if isinstance(target, ast.Name) else list(
                getattr(target, "elts", []))
            values = [value] if isinstance(target, ast.Name) else list(getattr(value, "elts", []))
            for target_name, target_value in zip(names, values):
                if isinstance(target_value, ast.Call) and getattr(target_value.func, "id", "") \
                        == "dict":
                    constants[target_name.id] = {keyword.arg: ast.literal_eval(keyword.value)
                                                 for keyword in target_value.keywords}
                else:
                    try:
                        constants[target_name.id] = ast.literal_eval(target_value)
                    except ValueError:
                        pass
    return constants


def load_config(filename):
    import importlib.util  # pylint: disable=import-outside-toplevel
    spec = importlib.util.spec_from_file_location(f"config_{filename[:-3]}",
                                                  REPO / "configs" / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_models_use_the_settings_of_the_citeulike_configs(name):
    """The notebooks' CML and CML+F are the configs' (chosen on the validation set)."""
    constants = notebook_constants(name)
    cml, cml_f = load_config("citeulike_t.py"), load_config("citeulike_t_features.py")
    feature_keys = {"lambda_f", "hidden", "dropout", "normalize_features",
                    "init_items_from_features"}
    for constant, config, keys in (
            ("CML_SETTINGS", cml, set(cml.model) - {"name"} - feature_keys),
            ("CML_F_SETTINGS", cml_f, set(cml_f.model) - {"name"})):
        settings = constants[constant]
        assert set(settings) <= keys, (constant, set(settings) - keys)
        assert settings == {key: config.model[key] for key in settings}, constant
        # What a notebook leaves out, the model's own default gives: the config's value.
        defaults = inspect.signature(CML.__init__).parameters
        assert {key: config.model[key] for key in keys - set(settings)} == {
            key: defaults[key].default for key in keys - set(settings)}, constant
    assert cml.train.batch_size == cml_f.train.batch_size == constants["BATCH_SIZE"]
    assert cml.train.learning_rate == cml_f.train.learning_rate == constants["LEARNING_RATE"]
    assert cml.train.optimizer == cml_f.train.optimizer == "adagrad"
    assert cml.train.lr_decay == cml_f.train.lr_decay == 0  # the notebooks' constant rate
    assert constants["EPOCHS"] <= cml.train.epochs


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, shared_data_dir, tmp_path):
    parameters = {**SHORT[name], **data_parameters(shared_data_dir, tmp_path),
                  "WORK_DIR": str(tmp_path / "work")}
    start = time.time()
    notebook = execute(name, parameters)   # raises CellExecutionError on any failing cell
    seconds = time.time() - start
    output = text_output(notebook)
    assert "Traceback" not in output
    assert "failed call to cuInit" not in output  # TensorFlow's C++ start-up noise
    assert images(notebook) >= 2  # the curves and the maps are drawn
    assert (tmp_path / "work" / "saved_model" / "1" / "saved_model.pb").exists()
    citeulike = parameters["DATA_DIR"].endswith("citeulike-t") and \
        "FALLING BACK" not in output
    assert citeulike == (shared_data_dir / "citeulike-t" / "users.dat").exists()
    print(json.dumps({"notebook": name, "seconds": round(seconds, 1),
                      "data": "citeulike-t" if citeulike else "synthetic"}))


@pytest.mark.slow
def test_quickstart_falls_back_to_synthetic_data_without_citeulike(tmp_path):
    parameters = dict(DATA_DIR=str(tmp_path / "absent"), DOWNLOAD=False, EPOCHS=3,
                      FEATURE_EPOCHS=1, EVAL_EVERY=3, MAP_METHOD="pca", MAP_ITEMS=300,
                      RECALL_FLOOR=0.2, FRESH_PROCESS=False, WORK_DIR=str(tmp_path / "work"))
    notebook = execute("cml_quickstart.ipynb", parameters)
    output = text_output(notebook)
    assert "FALLING BACK to the embedded synthetic data set" in output
    assert "synthetic data: the paper's numbers are for citeulike-t" in output


def setup_source(url=""):
    """The notebooks' first cell (the same in both) without its IPython magics."""
    sources = {load(name).cells[1].source for name in NOTEBOOKS}
    assert len(sources) == 1, "the two notebooks' setup cells differ"
    source = "\n".join(line for line in sources.pop().splitlines() if not line.startswith("%"))
    assert 'CML_TF_GIT_URL = ""' in source
    return source.replace('CML_TF_GIT_URL = ""', f"CML_TF_GIT_URL = {url!r}")


def run_setup_cell(cwd, url="", monkeypatch=None, hide_cml_tf=False):
    """Executes the setup cell from ``cwd``; pip calls are recorded, not run."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    calls = []
    if monkeypatch is not None:
        monkeypatch.setattr(subprocess, "check_call", lambda command: calls.append(command))
        if hide_cml_tf:
            find_spec = importlib.util.find_spec
            monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None
                                if name == "cml_tf" else find_spec(name, *args))
    namespace = {}
    previous = os.getcwd()
    try:
        os.chdir(cwd)
        exec(compile(setup_source(url), "setup-cell", "exec"), namespace)  # pylint: disable=exec-used
    finally:
        os.chdir(previous)
    return namespace, calls


def test_setup_cell_inside_the_clone_installs_nothing_and_uses_the_clone(monkeypatch):
    namespace, calls = run_setup_cell(COLAB, monkeypatch=monkeypatch)
    assert calls == []
    assert namespace["REPOSITORY"] == REPO and namespace["missing"] == []
    assert pathlib.Path(namespace["cml_tf"].__file__).resolve().parent == REPO / "cml_tf"
    assert namespace["tf"].keras.__name__.startswith("tf_keras")


def test_setup_cell_installs_the_clone_when_cml_tf_is_missing(monkeypatch):
    _, calls = run_setup_cell(COLAB, monkeypatch=monkeypatch, hide_cml_tf=True)
    assert len(calls) == 1 and calls[0][1:] == ["-m", "pip", "install", "-q", "-e", str(REPO)]


def test_setup_cell_outside_a_clone_installs_from_the_git_address(monkeypatch, tmp_path):
    url = "git+https://example.invalid/cml_tf.git"  # any address: pip is not called here
    _, calls = run_setup_cell(tmp_path, url, monkeypatch, hide_cml_tf=True)
    assert calls == [[calls[0][0], "-m", "pip", "install", "-q", f"cml_tf @ {url}"]]


def test_setup_cell_outside_a_clone_without_an_address_says_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="set CML_TF_GIT_URL at the top of this cell"):
        run_setup_cell(tmp_path, "", monkeypatch, hide_cml_tf=True)


def test_setup_cell_asks_for_a_restart_when_tf_keras_is_already_keras_3(tmp_path):
    """In a runtime where TensorFlow was imported first and tf.keras resolved to Keras 3."""
    script = tmp_path / "cell.py"
    script.write_text("import tensorflow as tf\n_ = tf.keras.layers\n" + setup_source())
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=COLAB, env=env, timeout=300)
    assert done.returncode != 0
    assert "Restart the runtime" in done.stderr and "RuntimeError" in done.stderr


def test_setup_cell_hides_tensorflows_start_up_errors():
    """No "E ... failed call to cuInit" line on a machine without a GPU (the setup cell asks
    TensorFlow for its GPUs); a TF_CPP_MIN_LOG_LEVEL the user set would be kept."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", setup_source()], capture_output=True, text=True,
                          cwd=COLAB, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GPUs:" in done.stdout
    assert "cuInit" not in done.stderr and " E " not in done.stderr, done.stderr[-3000:]
