"""`kconvert batch`: discovery (folders, globs, JSON and CSV manifests), output names, the content cache,
--shard, reports, exit codes, and isolation (a job past its timeout and one past its memory cap fail alone)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kmodels import layer, save_legacy_h5, sequential

from application.batch import parse_shard, take_shard
from application.batch_run import FORK_SERVER_ENV
from application.batch_sources import COLUMNS, CONVERT_OPTIONS, discover
from application.options import ConvertRequest
from converter.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT.parent / "shared" / "corpus" / "real"


def _batch(*args: str, timeout: float = 300, fork_server: str = "1") -> subprocess.CompletedProcess[str]:
    code = "import sys; from application.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(ROOT), FORK_SERVER_ENV: fork_server}
    return subprocess.run([sys.executable, "-c", code, "batch", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _registry(tmp_path: Path) -> Path:
    """Two small models, one of them as model.json + weights, with a model.h5 name in two folders."""
    registry = tmp_path / "registry"
    for case, files in (("small_cnn", ("model.h5", "model.json", "model.weights.h5")), ("dense_relu", ("model.h5",))):
        (registry / case).mkdir(parents=True)
        for name in files:
            shutil.copy(FIXTURES / case / name, registry / case / name)
    return registry


def _lambda_model(path: Path) -> Path:
    """Refused (exit 3 of convert): a Lambda holds code kconvert never runs."""
    lam = layer("Lambda", "lam", function=["ZZZZ", None, None], function_type="lambda", output_shape=None)
    return save_legacy_h5(path, sequential([lam], (3,)), {})


def _json(stdout: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(stdout)
    return data


def test_folder_discovery_pairs_json_with_weights_and_mirrors_paths(tmp_path: Path) -> None:
    jobs = discover([str(FIXTURES / "small_cnn")], tmp_path / "out")
    by_name = {job.name: job for job in jobs}
    assert set(by_name) == {"model.h5", "model.keras", "model.json", "model_k2.h5", "model_k2.json"}
    assert by_name["model.json"].weights == str(FIXTURES / "small_cnn" / "model.weights.h5")
    assert by_name["model_k2.json"].weights == str(FIXTURES / "small_cnn" / "weights_k2.h5")
    assert by_name["model.h5"].output == str((tmp_path / "out" / "model.h5.onnx").resolve())
    nested = discover([str(FIXTURES)], tmp_path / "out")
    assert len({job.output for job in nested}) == len(nested)  # model.h5 in every folder, no collision
    assert "zoo/convnext_mini/model.keras" in {job.name for job in nested}


def test_glob_and_collision_between_sources(tmp_path: Path) -> None:
    jobs = discover([str(FIXTURES / "*" / "model.keras")], tmp_path)
    assert {job.name for job in jobs} >= {"small_cnn/model.keras", "gru/model.keras"}
    assert all(job.name.endswith("model.keras") for job in jobs)
    twice = discover([str(FIXTURES / "gru"), str(FIXTURES / "small_cnn")], tmp_path)
    outputs = [job.output for job in twice if job.name.startswith("model.h5")]
    assert len(outputs) == 2 and len(set(outputs)) == 2 and all("model.h5-" in o for o in outputs)


def test_json_and_csv_manifests_with_options(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    (registry / "list.json").write_text(json.dumps([
        {"model": "small_cnn/model.json", "weights": "small_cnn/model.weights.h5", "opset": 13, "timeout": 30},
        {"model": "dense_relu/model.h5", "--float16": True, "opset": None}]))  # null: not given
    jobs = discover([str(registry / "list.json")], tmp_path / "out")
    assert [(j.name, j.options, j.timeout) for j in jobs] == [
        ("dense_relu/model.h5", {"float16": True}, None), ("small_cnn/model.json", {"opset": 13}, 30.0)]
    (registry / "list.csv").write_text("model,weights,opset,check,memory\nsmall_cnn/model.json,"
                                       "small_cnn/model.weights.h5,15,false,512\ndense_relu/model.h5,,,,\n")
    csv_jobs = discover([str(registry / "list.csv")], tmp_path / "out")
    assert [(j.name, j.options, j.memory) for j in csv_jobs] == [
        ("dense_relu/model.h5", {}, None), ("small_cnn/model.json", {"opset": 15, "check": False}, 512.0)]
    assert csv_jobs[1].weights == str(registry / "small_cnn" / "model.weights.h5")


@pytest.mark.parametrize(("rows", "expected"), [
    ([{"model": "a.h5", "opsett": 13}], "unknown option 'opsett'"),
    ([{"model": "a.h5", "opset": "x"}], "'opset' must be a number"),
    ([{"model": "a.h5", "timeout": 0}], "'timeout' must be > 0"),
    ([{"weights": "a.h5"}], "no 'model'"),
    ({"model": "a.h5"}, "expected a JSON list of objects"),
])
def test_bad_manifest_is_a_usage_error(tmp_path: Path, rows: Any, expected: str) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(rows))
    if not isinstance(rows, list):
        manifest = tmp_path / "m.csv"
        manifest.write_text("weights\nx.h5\n")
        expected = "no 'model' column"
    with pytest.raises(UsageError, match=expected):
        discover([str(manifest)], tmp_path / "out")


def test_manifest_option_names_are_the_convert_options() -> None:
    """Every ConvertRequest field is a manifest column or a per-model option: none is forgotten."""
    fields = set(ConvertRequest.__dataclass_fields__) - {"model", "output", "weights", "reference"}
    assert fields == set(CONVERT_OPTIONS)
    assert {"model", "weights", "reference", "test_data"} <= set(COLUMNS)


def test_shard_split_is_deterministic_and_complete(tmp_path: Path) -> None:
    jobs = discover([str(FIXTURES)], tmp_path)
    shards = [take_shard(jobs, (i, 3)) for i in (1, 2, 3)]
    names = [job.name for shard in shards for job in shard]
    assert sorted(names) == sorted(job.name for job in jobs) and len(set(names)) == len(jobs)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert take_shard(discover([str(FIXTURES)], tmp_path), (2, 3)) == shards[1]
    for bad in ("0/2", "3/2", "x", "1/0", "1-2"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


def test_batch_converts_reports_and_caches_by_content(tmp_path: Path) -> None:
    registry, out = _registry(tmp_path), tmp_path / "out"
    reports = [f"--jsonl={tmp_path / 'r.jsonl'}", f"--junit={tmp_path / 'r.xml'}", f"--markdown={tmp_path / 'r.md'}"]
    first = _batch(str(registry), "-o", str(out), "--jobs", "2", *reports, "--json")
    assert first.returncode == 0, first.stderr
    result = _json(first.stdout)
    assert result["counts"]["pass"] == 3 and result["counts"]["cached"] == 0
    assert {Path(m["output"]).relative_to(out.resolve()).as_posix() for m in result["models"]} == {
        "small_cnn/model.h5.onnx", "small_cnn/model.json.onnx", "dense_relu/model.h5.onnx"}
    assert all(Path(m["output"]).is_file() for m in result["models"])
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["pass"] * 3
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0" and len(suite.findall("testcase")) == 3
    assert "| pass | 3 |" in (tmp_path / "r.md").read_text()

    again = _json(_batch(str(registry), "-o", str(out), "--json").stdout)
    assert again["counts"]["cached"] == 3 and again["counts"]["pass"] == 3
    # Same size and mtime, other bytes: the cache hashes bytes, so the model runs again.
    weights = registry / "small_cnn" / "model.weights.h5"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = _json(_batch(str(registry), "-o", str(out), "--json").stdout)
    assert {m["name"] for m in changed["models"] if not m.get("cached")} == {"small_cnn/model.json"}
    forced = _json(_batch(str(registry), "-o", str(out), "--force", "--json").stdout)
    assert forced["counts"]["cached"] == 0


def test_exit_codes_refused_error_and_allow_refused(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    _lambda_model(registry / "refused.h5")
    refused = _batch(str(registry), "-o", str(tmp_path / "out"), "--json")
    assert refused.returncode == 3, refused.stderr
    assert _json(refused.stdout)["counts"]["refused"] == 1
    assert _batch(str(registry), "-o", str(tmp_path / "out"), "--allow-refused").returncode == 0
    shutil.copy(FIXTURES / "gru" / "model.weights.h5", registry / "weights_only.h5")  # FormatError: an error
    failed = _batch(str(registry), "-o", str(tmp_path / "out"), "--allow-refused")
    assert failed.returncode == 4 and "weights_only.h5" in failed.stdout and "weights only" in failed.stdout


def test_mismatch_against_a_reference_exits_4(tmp_path: Path) -> None:
    reference = dict(np.load(FIXTURES / "small_cnn" / "reference.npz"))
    reference["y0"] = reference["y0"] + 1.0
    np.savez(tmp_path / "wrong.npz", **reference)
    shutil.copy(FIXTURES / "small_cnn" / "model.keras", tmp_path / "model.keras")
    (tmp_path / "list.json").write_text(json.dumps([{"model": "model.keras", "reference": "wrong.npz"}]))
    run = _batch(str(tmp_path / "list.json"), "-o", str(tmp_path / "out"), "--json")
    assert run.returncode == 4, run.stderr
    (model,) = _json(run.stdout)["models"]
    assert model["status"] == "mismatch" and "does not match" in model["reason"]


@pytest.mark.parametrize(("fork_server", "runner"), [("1", "fork-server"), ("0", "subprocess")])
def test_a_hanging_job_and_a_memory_blowup_fail_alone(tmp_path: Path, fork_server: str, runner: str) -> None:
    """A FIFO named model.h5 would block whoever opens it: it is refused without being opened. A job past
    its timeout (its --extension file sleeps) is killed; a model whose weights exceed --memory-limit fails as
    out of memory; the others pass. Through the fork servers (the default) and a fresh process per job."""
    registry = _registry(tmp_path)
    os.mkfifo(registry / "fifo.h5")
    # 128 MB of weights against a 250 MB address-space cap: the interpreter with the conversion path imported
    # takes ~180 MB (a fork server's child starts there), so a small model passes under the same cap
    n, m = 4096, 8192
    config = sequential([layer("Dense", "dense", units=m)], (n,))
    save_legacy_h5(registry / "big.h5", config, {"dense": [np.ones((n, m), "float32"), np.zeros(m, "float32")]})
    (registry / "hangs.py").write_text("import time\ntime.sleep(300)\n")  # a handler file that never returns
    (registry / "list.json").write_text(json.dumps([
        {"model": "small_cnn/model.h5", "timeout": 1, "extension": ["hangs.py"]}, {"model": "big.h5", "memory": 250},
        {"model": "fifo.h5"}, {"model": "dense_relu/model.h5", "memory": 250}, {"model": "small_cnn/model.json"}]))
    start = time.perf_counter()
    run = _batch(str(registry / "list.json"), "-o", str(tmp_path / "out"), "--jobs", "2", "--json", timeout=120,
                 fork_server=fork_server)
    assert time.perf_counter() - start < 60
    models = _json(run.stdout)["models"]
    status = {m["name"]: (m["status"], m["reason"]) for m in models}
    assert {m["runner"] for m in models if m["name"] != "fifo.h5"} == {runner}  # the FIFO never runs
    assert run.returncode == 4
    assert status["small_cnn/model.h5"][0] == "timeout" and "after 1 s" in status["small_cnn/model.h5"][1]
    assert status["big.h5"][0] == "oom" and "250 MB" in status["big.h5"][1]
    assert status["fifo.h5"][0] == "error" and "not a file" in status["fifo.h5"][1]
    assert status["dense_relu/model.h5"][0] == status["small_cnn/model.json"][0] == "pass"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, expected in (([str(empty)], "no model files found"),
                           ([str(FIXTURES / "gru"), "--shard", "3/2"], "--shard"),
                           ([str(FIXTURES / "gru"), "--jobs", "0"], "--jobs"),
                           ([str(tmp_path / "missing")], "no such file or folder"),
                           ([str(FIXTURES / "gru"), "--rtol", "1e-3"], "--rtol")):
        run = _batch(*args, "-o", str(tmp_path / "out"))
        assert run.returncode == 2 and expected in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr


@pytest.mark.corpus
@pytest.mark.skipif(not (CORPUS / "manifest.json").exists(), reason=f"the real-world corpus is not at {CORPUS}")
def test_corpus_batch_and_cached_rerun(tmp_path: Path) -> None:
    """Every corpus model ends with a status (none crashes or hangs); a cached re-run takes under 2 s; the
    corpus' own manifest (records with `files`) names the same models as a search of its folder, but two."""
    by_manifest = {(j.model, j.weights) for j in discover([str(CORPUS / "manifest.json")], tmp_path)}
    by_search = {(j.model, j.weights) for j in discover([str(CORPUS)], tmp_path)}
    assert len(by_manifest) == len(by_search) and len(by_manifest - by_search) <= 2
    first = _batch(str(CORPUS), "-o", str(tmp_path / "out"), "--json", timeout=900)
    result = _json(first.stdout)
    assert len(result["models"]) >= 70 and result["counts"]["pass"] >= 50
    assert not {m["status"] for m in result["models"]} & {"timeout", "oom", "crashed"}
    assert all(m.get("exit_code") in (0, 2, 3, 4) for m in result["models"])
    # Every model cached: nothing converted again (how fast that is, bench/batch_bench.py measures; a timed
    # assertion here would fail on a busy machine, not on slow code).
    again = _json(_batch(str(CORPUS), "-o", str(tmp_path / "out"), "--json").stdout)
    assert again["counts"]["cached"] == len(result["models"])


def test_manifest_reference_and_test_data_are_checked(tmp_path: Path) -> None:
    """A reference .npz checks the conversion (convert --reference); a test_data folder is replayed on the
    new file (kconvert verify)."""
    shutil.copy(FIXTURES / "small_cnn" / "model.keras", tmp_path / "model.keras")
    shutil.copy(FIXTURES / "small_cnn" / "reference.npz", tmp_path / "reference.npz")
    (tmp_path / "first.json").write_text(json.dumps(
        [{"model": "model.keras", "reference": "reference.npz", "save_test_data": True}]))
    first = _batch(str(tmp_path / "first.json"), "-o", str(tmp_path / "a"), "--json")
    assert first.returncode == 0, first.stderr
    (model,) = _json(first.stdout)["models"]
    assert model["convert"]["check"]["ok"] and model["convert"]["check"]["against"].endswith("reference.npz")
    saved = Path(model["convert"]["test_data"])
    (tmp_path / "second.json").write_text(json.dumps([{"model": "model.keras", "test_data": str(saved)}]))
    second = _batch(str(tmp_path / "second.json"), "-o", str(tmp_path / "b"), "--json")
    assert second.returncode == 0, second.stderr
    (verified,) = _json(second.stdout)["models"]
    assert verified["status"] == "pass" and verified["verify"]["ok"]
    assert verified["verify"]["model"].startswith(str(tmp_path / "b"))


def test_the_job_process_imports_only_the_conversion_path(tmp_path: Path) -> None:
    """No Keras, TensorFlow, onnxruntime, Dask or click in a job that does not check (start-up per model)."""
    job = {"name": "m", "model": str(FIXTURES / "small_cnn" / "model.keras"), "output": str(tmp_path / "m.onnx"),
           "options": {}}
    code = ("import json, sys; from application.batch_job import run_job; r = run_job(json.loads(sys.argv[1])); "
            "print(json.dumps([r['status'], sorted({m.split('.')[0] for m in sys.modules})]))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    status, modules = json.loads(done.stdout.splitlines()[-1])
    assert status == "pass"
    assert not set(modules) & {"tensorflow", "keras", "tf_keras", "jax", "torch", "onnxruntime", "distributed",
                               "dask", "click"}


def test_progress_line_counts_and_eta() -> None:
    from rich.text import Text

    from application.batch_report import BatchProgress

    progress = BatchProgress(4, enabled=False)
    progress.add([{"status": "pass", "cached": True}, {"status": "timeout"}, {"status": "refused"}])
    line = Text.from_markup(progress.line()).plain
    assert line.startswith("batch [######################........] 3/4")
    assert "pass 1" in line and "refused 1" in line and "error 1" in line and "cached 1" in line
    assert "ETA ? " not in line and line.endswith(" s")


def test_extension_files_reach_each_job_and_key_the_cache(tmp_path: Path) -> None:
    """--extension (here for every model) and a manifest's per-model `extension` run the user's handler file in
    the job's process; editing that file reconverts (its bytes are in the cache key)."""
    registry = tmp_path / "registry"
    registry.mkdir()
    scale = [layer("Dense", "d", units=3), layer("my>Scale", "scale")]
    weights = {"d": [np.eye(3, dtype="float32"), np.zeros(3, "float32")], "scale": [np.full(3, 2.0, "float32")]}
    save_legacy_h5(registry / "m.h5", sequential(scale, (3,)), weights)
    handlers = tmp_path / "my_layers.py"
    handlers.write_text("from converter.extensions import register_layer\n\n"
                        "@register_layer('Scale', weights=('gamma',))\n"
                        "def scale(b, inputs, node):\n    return b.op('Mul', inputs[0], b.weight('gamma'))\n")
    refused = _batch(str(registry), "-o", str(tmp_path / "out0"), "--json")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    first = _batch(str(registry), "-o", str(tmp_path / "out"), "--extension", str(handlers), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = tmp_path / "list.json"
    manifest.write_text(json.dumps([{"model": "registry/m.h5", "extension": ["my_layers.py"]}]))
    per_model = _batch(str(manifest), "-o", str(tmp_path / "out2"), "--json")
    assert per_model.returncode == 0, per_model.stdout + per_model.stderr
    cached = _batch(str(registry), "-o", str(tmp_path / "out"), "--extension", str(handlers), "--json")
    assert _json(cached.stdout)["counts"].get("cached") == 1, cached.stdout
    handlers.write_text(handlers.read_text() + "# edited\n")
    edited = _batch(str(registry), "-o", str(tmp_path / "out"), "--extension", str(handlers), "--json")
    assert edited.returncode == 0 and not _json(edited.stdout)["counts"].get("cached"), edited.stdout
