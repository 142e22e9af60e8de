"""Shipped benchmark figures agree with each other and with the docs that quote them.

A figure in the docs must come from the JSON its benchmark script wrote; a results file
must not carry a second, older copy of a measurement that another file holds.
"""

import json
import os
import re

import pytest

from harness import read_doc

ROOT = os.path.join(os.path.dirname(__file__), "..")
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _load(name):
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        return json.load(f)


def test_sla_speed_lives_in_one_file():
    # benchmarks/sla.py writes speed to sla_speed.json and accuracy to sla.json; a
    # speed block in sla.json is a stale duplicate (it once said SLA/CE = 0.787).
    assert "speed" not in _load("sla.json")
    speeds = _load("sla_speed.json")["speed"]
    assert {s["jit_compile"] for s in speeds} == {False, True}


@pytest.mark.parametrize("row, key", [
    ("SLA+SD training step / plain CE step", "sla_step_over_ce_step"),
    ("SLA+SD training step / hand-written Keras CE step", "sla_step_over_plain_keras_step"),
    ("library CE step / hand-written Keras CE step", "library_ce_step_over_plain_keras_step"),
    ("SLA+SD inference (head u) / supervised inference", "sd_inference_over_supervised"),
    ("SLA+AG inference / supervised inference", "ag_inference_over_supervised"),
])
def test_sla_doc_speed_table_matches_results(row, key):
    speeds = {s["jit_compile"]: s for s in _load("sla_speed.json")["speed"]}
    line = next(l for l in read_doc("sla.md").splitlines() if l.startswith(f"| {row}"))
    graph, xla = (float(v) for v in re.findall(r"\| ([0-9.]+) ", line)[:2])
    assert graph == pytest.approx(round(speeds[False][key], 2), abs=1e-9), line
    assert xla == pytest.approx(round(speeds[True][key], 2), abs=1e-9), line


def _benchmark_module(name):
    """A module of benchmarks/ (the scripts import their neighbours by name)."""
    import importlib
    import sys
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.fixture
def benchmark_script():
    """Imports a benchmark script afresh, its absl flags alone on absl's global FLAGS.

    The scripts and `ssl_zoo.cli` define flags of the same names (--data, --width,
    --out, ...) on the one global FlagValues, so every flag not defined by absl itself
    is set aside while the script is loaded and put back after the test.
    """
    import sys
    from absl import flags
    fv = flags.FLAGS
    stashed = [(module, flag) for module, defined in fv.flags_by_module_dict().items()
               if not module.startswith("absl") for flag in defined]
    for name in {flag.name for _, flag in stashed}:
        delattr(fv, name)
    loaded = []

    def load(name):
        sys.modules.pop(name, None)
        loaded.append(name)
        return _benchmark_module(name)

    yield load
    for name in loaded:
        for flag in fv.get_flags_for_module(name):
            if flag.name in fv:
                delattr(fv, flag.name)
        sys.modules.pop(name, None)
    for module, flag in stashed:
        if flag.name not in fv:
            fv[flag.name] = flag
        fv.register_flag_by_module(module, flag)


def test_sla_doc_accuracy_table_matches_results():
    """Every (size, method) mean of the SLA protocol is quoted in docs/sla.md as
    `| n | method | mean ± std | seeds | gain |` (the mean alone for one seed), and
    the summary is the mean of the runs it was computed from."""
    keys = _benchmark_module("sla_rows").ROWS   # row -> (method, metric)
    result = _load("sla.json")
    text = read_doc("sla.md")
    assert result["summary"]
    for size, rows in result["summary"].items():
        for row, v in rows.items():
            method, key = keys[row]
            values = [100 * seeds[method]["metrics"][key]
                      for seeds in result["runs"][size].values() if method in seeds]
            assert v["mean"] == pytest.approx(sum(values) / len(values), abs=1e-9)
            # One seed has no spread: the table gives its mean alone.
            spread = rf" ± {v['std']:.2f}" if len(values) > 1 else ""
            assert re.search(rf"\| {size} \| {re.escape(row)} \| {v['mean']:.2f}{spread} "
                             rf"\| {len(values)} \|", text), (
                f"docs/sla.md does not quote n={size} {row} = {v['mean']:.2f}")


def test_sla_doc_accuracy_table_is_the_generated_one():
    """docs/sla.md holds, as one block, the table `benchmarks/plot_sla.py` prints from
    the shipped JSON (training accuracies and times averaged over the seeds too)."""
    table = "\n".join(_benchmark_module("plot_sla").accuracy_table(_load("sla.json")))
    assert table + "\n" in read_doc("sla.md"), table


def test_plot_sla_writes_its_table_into_the_docs_and_its_doctests_pass(tmp_path):
    """`update_doc_table` swaps exactly the table block: a no-op on the shipped docs,
    and with one run dropped from the JSON that row goes and the prose stays."""
    import doctest
    plot = _benchmark_module("plot_sla")
    doctests = doctest.testmod(plot)
    assert doctests.failed == 0 and doctests.attempted >= 6
    doc = tmp_path / "sla.md"
    doc.write_text(read_doc("sla.md"))
    result = _load("sla.json")
    assert not plot.update_doc_table(result, str(doc))
    assert doc.read_text() == read_doc("sla.md")
    size = min(result["runs"], key=int)
    seed = max(result["runs"][size], key=int)
    del result["runs"][size][seed]["supervised"]
    assert plot.update_doc_table(result, str(doc))
    before, after = read_doc("sla.md").splitlines(), doc.read_text().splitlines()
    assert [line for line in before if not line.startswith("| ")] == [
        line for line in after if not line.startswith("| ")]
    row = next(line for line in after if line.startswith(f"| {size} | Supervised |"))
    assert "| 1 |" in row    # the seed count went down by one
    assert os.listdir(tmp_path) == ["sla.md"]    # no temporary file left
    doc.write_text("no table here\n")
    with pytest.raises(ValueError, match="no accuracy table"):
        plot.update_doc_table(result, str(doc))


def test_sla_summary_is_the_current_one_and_its_gains_are_paired():
    """The JSON's summary is what `sla_rows.summarise` computes from its runs, and a
    gain compares each seed with its own baseline: with the baseline run for seeds 0
    and 1 but SLA only for seed 0, SLA's gain is seed 0's difference, not SLA's mean
    minus the baseline's mean over other seeds."""
    rows = _benchmark_module("sla_rows")
    result = _load("sla.json")
    assert result["summary"] == json.loads(json.dumps(rows.summarise(result["runs"])))
    metrics = {"self_distill_accuracy": 0.62, "aggregated_accuracy": 0.63,
               "single_accuracy": 0.61}
    runs = {"500": {"0": {"supervised": {"metrics": {"accuracy": 0.60}},
                          "sla": {"metrics": metrics}},
                    "1": {"supervised": {"metrics": {"accuracy": 0.40}}}}}
    table = rows.summarise(runs)["500"]
    assert table["Supervised"]["mean"] == pytest.approx(50.0)
    assert table["SLA+SD"]["seed_gains"] == {"0": pytest.approx(2.0)}
    assert table["SLA+SD"]["gain_over_supervised"] == pytest.approx(2.0)
    assert table["SLA+AG"]["gain_over_supervised"] == pytest.approx(3.0)
    assert "gain_over_supervised" not in table["Supervised"]
    assert list(table) == ["Supervised", "SLA single", "SLA+AG", "SLA+SD"]   # ROWS order


def test_plot_sla_draws_the_gain_figure_once_two_sizes_have_a_gain(tmp_path):
    """plot_sla draws curves and bars from any results file, and the gain-vs-n figure
    only when a gain exists at two training-set sizes (here one of them on one seed)."""
    pytest.importorskip("matplotlib")
    plot = _benchmark_module("plot_sla")
    result = _load("sla.json")
    one_size = {"config": result["config"], "runs": {"2000": result["runs"]["2000"]}}
    two_sizes = {"config": result["config"], "runs": {
        "2000": result["runs"]["2000"],
        "500": {"0": result["runs"]["2000"]["0"]}}}   # one seed at the second size
    for name, res in (("one", one_size), ("two", two_sizes)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(res))
        plot.main(str(path), str(tmp_path / name))
    assert sorted(os.listdir(tmp_path / "one")) == ["sla_bars.png", "sla_curves.png"]
    assert sorted(os.listdir(tmp_path / "two")) == ["sla_bars.png", "sla_curves.png",
                                                    "sla_gain.png"]


def test_sla_official_step_results():
    """The library's and the authors' SLA+SD models have the same size; the ratios are
    the quotients of the step times in the same file; docs/sla.md quotes them."""
    result = _load("sla_official_step.json")
    rows = {r["jit_compile"]: r for r in result["results"]}
    assert set(rows) == {False, True}
    pairs = {"library_sla_over_official_sla": ("library_sla", "official_sla"),
             "library_ce_over_official_ce": ("library_ce", "official_ce"),
             "library_sla_over_library_ce": ("library_sla", "library_ce"),
             "official_sla_over_official_ce": ("official_sla", "official_ce")}
    for row in rows.values():
        assert row["library_sla_parameters"] == result["official_sla_parameters"] == 466754
        t = row["seconds_per_step"]
        for key, (a, b) in pairs.items():
            assert row[key] == pytest.approx(t[a] / t[b], rel=1e-9), key
    text = read_doc("sla.md")
    for label, key in (("library SLA+SD step / official SLA+SD step",
                        "library_sla_over_official_sla"),
                       ("library CE step / official CE step", "library_ce_over_official_ce"),
                       ("SLA+SD step / CE step, library", "library_sla_over_library_ce"),
                       ("SLA+SD step / CE step, official", "official_sla_over_official_ce")):
        line = next(l for l in text.splitlines() if l.startswith(f"| {label} |"))
        graph, xla = (float(v) for v in re.findall(r"\| ([0-9.]+) ", line)[:2])
        assert graph == pytest.approx(round(rows[False][key], 2), abs=1e-9), line
        assert xla == pytest.approx(round(rows[True][key], 2), abs=1e-9), line


def test_sla_protocol_keeps_recorded_runs(tmp_path, monkeypatch, benchmark_script):
    """A rerun of benchmarks/sla.py trains only the runs its JSON does not hold, keeps
    the others (the file, not a scratch run directory, carries them across machines),
    and refuses to mix runs of another protocol into the file."""
    import doctest
    sla = benchmark_script("sla")
    doctests = doctest.testmod(sla, optionflags=doctest.ELLIPSIS)
    assert doctests.failed == 0 and doctests.attempted >= 4
    out = tmp_path / "sla.json"
    protocol = {k: _load("sla.json")["config"][k] for k in sla.PROTOCOL_KEYS}
    out.write_text(json.dumps({"config": protocol, "runs": {"2000": {
        "0": {m: {"metrics": {"accuracy": 0.5}} for m in ("supervised", "sla")}}}}))
    trained = []

    def fake_run(method, size, seed, steps_per_epoch):
        trained.append((method, size, seed))
        return {"metrics": {"accuracy": 0.25}, "seconds": 1.0}

    monkeypatch.setattr(sla, "one_run", fake_run)

    def protocol_run(*flags):
        sla.FLAGS(["sla.py", "--train_sizes=2000", "--methods=supervised,sla",
                   f"--out={out}", f"--width={protocol['width']}",
                   f"--epochs={protocol['epochs']}",
                   f"--batch_size={protocol['batch_size']}",
                   f"--precision={protocol['precision']}",
                   f"--test_examples={protocol['test_examples']}", *flags])
        try:
            result = {"config": dict(protocol)}
            result["runs"] = sla.recorded_results(str(out), protocol)
            return sla.accuracy_protocol(result)
        finally:
            sla.FLAGS.unparse_flags()

    protocol_run("--seeds=0,1")
    assert trained == [("supervised", 2000, 1), ("sla", 2000, 1)]
    written = json.loads(out.read_text())
    assert written["runs"]["2000"]["0"]["sla"]["metrics"]["accuracy"] == 0.5   # kept
    assert written["runs"]["2000"]["1"]["sla"]["metrics"]["accuracy"] == 0.25  # new
    assert written["config"]["seeds"] == ["0", "1"]
    assert written["summary"]["2000"]["Supervised"]["values"] == [50.0, 25.0]
    # everything asked for is recorded: nothing trains, the summary is still made
    trained.clear()
    summary = protocol_run("--seeds=0")["summary"]
    assert summary["2000"]["Supervised"]["values"] == [50.0, 25.0]
    assert trained == []
    # --rerun runs the selected cells again and keeps the others
    protocol_run("--seeds=0", "--rerun")
    assert trained == [("supervised", 2000, 0), ("sla", 2000, 0)]
    written = json.loads(out.read_text())
    assert written["summary"]["2000"]["Supervised"]["values"] == [25.0, 25.0]
    with pytest.raises(ValueError, match=r"another protocol \(epochs"):
        sla.recorded_results(str(out), dict(protocol, epochs=protocol["epochs"] + 1))
    assert sla.recorded_results(str(out), dict(protocol, epochs=1), rerun=True) == {}
    assert sla.recorded_results(str(out), protocol, rerun=True)["2000"]["1"]
    assert sla.recorded_results(str(tmp_path / "missing.json"), protocol) == {}


def test_supcon_protocol_keeps_recorded_methods(tmp_path, benchmark_script):
    """benchmarks/supcon.py keeps the accuracy rows (and speed figures) its JSON holds
    under the same protocol, and names the setting that differs otherwise."""
    import doctest
    supcon = benchmark_script("supcon")
    doctests = doctest.testmod(supcon, optionflags=doctest.ELLIPSIS)
    assert doctests.failed == 0 and doctests.attempted >= 4
    earlier = _load("supcon_earlier.json")
    protocol = {k: earlier["config"].get(k) for k in supcon.PROTOCOL_KEYS}
    out = tmp_path / "supcon.json"
    out.write_text(json.dumps(earlier))
    kept = supcon.recorded_results(str(out), protocol)
    assert kept["accuracy"] == earlier["accuracy"] and kept["speed"] == earlier["speed"]
    with pytest.raises(ValueError, match=r"another protocol \(width 0.25, here 0.5"):
        supcon.recorded_results(str(out), dict(protocol, width=0.5))
    assert "accuracy" not in supcon.recorded_results(str(out), dict(protocol, width=0.5),
                                                     rerun=True)
    assert supcon.recorded_results(str(out), protocol, rerun=True)["accuracy"]


def test_plot_supcon_table_and_figures(tmp_path):
    """plot_supcon's table reads every method's row of the protocol's JSON (doctest),
    and with matplotlib present the two figures are written."""
    import doctest
    plot = _benchmark_module("plot_supcon")
    doctests = doctest.testmod(plot)
    assert doctests.failed == 0 and doctests.attempted >= 1
    row = {"probe_top1": 0.5, "final_train_loss": 2.0, "seconds": 3.0,
           "train_curve": {"loss": [4.0, 2.0]},
           "test_curve": [{"epoch": 1.0, "knn_accuracy": 0.25},
                          {"epoch": 2.0, "knn_accuracy": 0.375}]}
    result = {"config": {"train_examples": 10, "backbone": "b", "width": 0.5,
                         "batch_size": 4},
              "accuracy": {"ce": dict(row, end_to_end_top1=0.625),
                           "supcon": dict(row, probe_top1=0.75)}}
    table = plot.accuracy_table(result)
    assert table[2] == "| Cross-entropy | 50.00 | 37.50 | 62.50 | 2.000 | 3 |"
    assert table[3] == "| SupCon | 75.00 | 37.50 | – | 2.000 | 3 |"
    pytest.importorskip("matplotlib")
    path = tmp_path / "supcon.json"
    path.write_text(json.dumps(result))
    plot.main(str(path), str(tmp_path / "images"))
    assert sorted(os.listdir(tmp_path / "images")) == ["supcon_bars.png",
                                                       "supcon_curves.png"]


def test_supcon_doc_accuracy_table_is_the_generated_one():
    """docs/supcon.md holds, as one block, the table `benchmarks/plot_supcon.py` prints
    from the shipped protocol results, and its protocol figures are the JSON's."""
    result = _load("supcon.json")
    table = "\n".join(_benchmark_module("plot_supcon").accuracy_table(result))
    text = read_doc("supcon.md")
    assert table + "\n" in text, table
    config, words = result["config"], " ".join(text.split())   # across line breaks
    for quoted in (f"ResNet-32 ×{config['width']}", f"{config['train_examples']:,}-image",
                   f"{config['epochs']} epochs", f"batch {config['batch_size']}"):
        assert quoted in words, quoted


def test_unfinished_runs_are_listed_and_unpack_to_their_step(tmp_path):
    """Every packed run in benchmarks/unfinished is a row of its README (and every row
    an archive there), and unpacks to a step backup of the step the row gives."""
    from ssl_zoo.backup import unpack_run
    folder = os.path.join(ROOT, "benchmarks", "unfinished")
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as f:
        rows = re.findall(r"^\| `([^`]+\.tar\.gz)` \| .+ \| ([0-9,]+) \| (.+) \|$",
                          f.read(), re.M)
    archives = sorted(n for n in os.listdir(folder) if n.endswith(".tar.gz"))
    assert sorted(name for name, _, _ in rows) == archives
    for name, step, command in rows:
        assert f"--archive=benchmarks/unfinished/{name}" in command, command
        out = unpack_run(os.path.join(folder, name), str(tmp_path / name))
        assert out["step"] == int(step.replace(",", "")), name


def test_preset_learning_curve_keeps_direct_and_knn_scores(benchmark_script):
    """train_presets records a classifier's periodic test accuracy and a SupCon
    encoder's kNN monitor under their own names, and the per-epoch training metrics."""
    presets = benchmark_script("train_presets")
    out = {"history": {"loss": [2.0, 1.0], "accuracy": [0.5, 0.75], "lr": [0.1, 0.1]},
           "details": {"periodic_evaluations": [
               {"step": 10, "accuracy": 0.123456789, "balanced_accuracy": 0.1},
               {"step": 20, "knn_accuracy": 0.5, "knn_balanced_accuracy": 0.5}]}}
    curve = presets.learning_curve(out)
    assert curve["train_per_epoch"] == {"loss": [2.0, 1.0], "accuracy": [0.5, 0.75]}
    assert curve["test"] == [{"step": 10, "accuracy": 0.12346},
                             {"step": 20, "knn_accuracy": 0.5}]


def test_preset_optimizer_flags_override_only_what_they_set(benchmark_script):
    """train_presets' --learning_rate/--warmup_epochs/--schedule become TrainConfig
    fields (warm-up in steps of the run's batch); unset, the method's recipe stands."""
    from ssl_zoo.models import get_method
    from ssl_zoo.training import TrainConfig, resolve_recipe
    presets = benchmark_script("train_presets")

    def overrides_of(*argv):
        presets.FLAGS(["train_presets.py", "--train_examples=50000", "--batch_size=512",
                       *argv])
        try:
            return presets.optimizer_overrides()
        finally:
            presets.FLAGS.unparse_flags()

    assert overrides_of() == {}
    overrides = overrides_of("--learning_rate=0.25", "--warmup_epochs=10",
                             "--schedule=cosine")
    assert overrides == {"learning_rate": 0.25, "schedule": "cosine", "warmup_steps": 970}
    spec = get_method("supcon")
    default = resolve_recipe(TrainConfig(method="supcon"), spec)
    assert default["learning_rate"] != 0.25
    assert resolve_recipe(TrainConfig(method="supcon", **overrides), spec) == {
        **default, "learning_rate": 0.25, "schedule": "cosine", "warmup_steps": 970}
