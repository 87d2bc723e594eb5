"""The benchmark runner: one entry point per benchmark, quick mode end to end, failures reported."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
QUICK_TIMEOUT_S = 1200  # a few minutes on a quiet 2-core CPU; generous for a busy one


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"divekit_bench_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    """``benchmarks/run.py`` as a module."""
    return _load(BENCHMARKS / "run.py")


@pytest.fixture(scope="module")
def machine(runner) -> ModuleType:
    """``benchmarks/_machine.py``, imported by name as the benchmarks import it."""
    runner._shared_importable()
    import _machine

    return _machine


def test_discovery_lists_every_benchmark_file_and_no_shared_one(runner):
    names = runner.discover()
    on_disk = {p.stem for p in BENCHMARKS.glob("*.py")}
    assert set(names) == {n for n in on_disk if n != "run" and not n.startswith("_")}
    assert "_machine" in on_disk and "_machine" not in names
    assert len(names) >= 9, names


@pytest.mark.parametrize("name", _load(BENCHMARKS / "run.py").discover())
def test_every_benchmark_exposes_run_with_quick_first(runner, name):
    module = runner.load(name)
    assert callable(getattr(module, "run", None)), f"{name} has no run()"
    params = list(inspect.signature(module.run).parameters.values())
    assert params and params[0].name == "quick", f"{name}.run's first parameter is not quick"
    assert params[0].default is False, f"{name}.run(quick=...) must default to full mode"
    others = [p for p in params[1:] if p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD)]
    assert not others, f"{name}.run: options after quick must be keyword-only, not {[p.name for p in others]}"


def test_parse_cpuinfo_takes_the_first_processor(machine):
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n\n"
            "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    model, flags = machine.parse_cpuinfo(text)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"} <= flags
    assert "fpu" in flags


def test_parse_cpuinfo_reads_lscpu_output(machine):
    model, flags = machine.parse_cpuinfo("Architecture: x86_64\nModel name:   AMD EPYC\nFlags:  fpu avx2\n")
    assert model == "AMD EPYC" and flags == {"fpu", "avx2"}


def test_cpu_info_names_a_model_and_every_relevant_flag(machine):
    info = machine.cpu_info()
    assert isinstance(info["model"], str) and info["model"]
    assert set(info["flags"]) == set(machine.RELEVANT_FLAGS)
    assert all(isinstance(v, bool) for v in info["flags"].values())


def test_stamp_labels_the_mode(machine):
    assert machine.stamp({"x": 1}, quick=True)["mode"] == "quick"
    full = machine.stamp({"x": 1}, quick=False)
    assert full["mode"] == "full" and full["x"] == 1 and "flags" in full["cpu"]


def _fake(result) -> SimpleNamespace:
    """A stand-in benchmark module whose run returns ``result`` (or raises it)."""
    def run(quick: bool = False) -> dict:
        if isinstance(result, BaseException):
            raise result
        return dict(result, mode="quick" if quick else "full") if result is not None else {"no": "mode"}

    return SimpleNamespace(run=run)


def test_a_failing_benchmark_is_reported_and_the_others_still_run(runner, monkeypatch, tmp_path, capsys):
    modules = {"broken": _fake(RuntimeError("boom\nsecond line")), "no_mode": _fake(None), "fine": _fake({"v": 3})}
    monkeypatch.setattr(runner, "discover", lambda: sorted(modules))
    monkeypatch.setattr(runner, "load", modules.__getitem__)
    out = tmp_path / "results.json"
    assert runner.main(["--quick", "--out", str(out)]) == 1
    written = json.loads(out.read_text())
    assert written["failures"]["broken"] == "RuntimeError: boom"
    assert "mode" in written["failures"]["no_mode"]
    assert list(written["benchmarks"]) == ["fine"] and written["benchmarks"]["fine"]["v"] == 3
    err = capsys.readouterr().err
    assert "[broken] FAILED: RuntimeError: boom" in err and "2 failed" in err


def test_unknown_benchmark_name_is_refused(runner, tmp_path, capsys):
    assert runner.main(["no_such_benchmark", "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown no_such_benchmark" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_quick_run_of_every_benchmark(runner, tmp_path):
    """``python benchmarks/run.py --quick`` runs them all, labelled quick, with the machine recorded."""
    out = tmp_path / "results.json"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, env=dict(os.environ), timeout=QUICK_TIMEOUT_S, cwd=tmp_path,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["failures"] == {}
    assert set(results["benchmarks"]) == set(runner.discover())
    for name, result in results["benchmarks"].items():
        assert result["mode"] == "quick", name
        assert set(result["cpu"]["flags"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, name
        assert 0 < result["wall_seconds"] < time.perf_counter() - start, name
    machine = results["machine"]
    assert machine["cpu"]["model"] and machine["torch"] and machine["cpu_count"] >= 1


def _tour_result(**metrics) -> dict:
    return {"metrics": metrics, "wall_seconds": 1.0}


def test_tour_targets_are_read_from_the_experiments_results(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))  # tour_time imports the shared _machine by name
    try:
        tour_time = _load(BENCHMARKS / "tour_time.py")
    finally:
        sys.path.remove(str(BENCHMARKS))
    results = {
        "fashion-mnist-baselines": _tour_result(best_test_accuracy=0.9115),
        "cnn-compare": _tour_result(best_test_accuracy=0.905, test_accuracy_alexnet=0.877, test_accuracy_resnet=0.905),
        "char-lm": _tour_result(**{"rnn-lm_scratch_test_perplexity": 6.6, "lstm-lm_torch_test_perplexity": 3.9,
                                   "trigram_test_perplexity": 6.57, "unigram_test_perplexity": 16.7}),
    }
    verdicts = {(t["experiment"], t["target"]): (t["measured"], t["holds"]) for t in tour_time.check_targets(results)}
    assert verdicts[("fashion-mnist-baselines", "best model >= 91% test")] == (0.9115, True)
    assert verdicts[("cnn-compare", "every CNN >= 87% test")] == (0.877, True)
    assert verdicts[("cnn-compare", "the validation-selected CNN >= 91% test")] == (0.905, False)
    assert verdicts[("char-lm", "best recurrent model <= 4.1 test perplexity")] == (3.9, True)
    # The RNN at 6.6 is above the trigram's 6.57; the unigram baseline is not a recurrent model.
    assert verdicts[("char-lm", "worst recurrent model below the trigram's test perplexity")] == (6.6, False)
    assert not any(name == "attention" for name, _ in verdicts)  # no result, no verdict
    for name, r in results.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    assert tour_time.check_directory(tmp_path)["targets"] == tour_time.check_targets(results)


def test_resnet_targets_follow_the_kind_of_bf16_unit():
    sys.path.insert(0, str(BENCHMARKS))
    import cnn_throughput

    rates = {"fp32": {"of_ceiling": 0.75}, "bf16": {"of_ceiling": 0.4}}
    amx = cnn_throughput.resnet_targets(rates, {"amx_bf16": True, "avx512_bf16": True})
    assert amx["bf16"]["target"] == 0.35 and amx["bf16"]["meets_target"]
    avx = cnn_throughput.resnet_targets(rates, {"avx512_bf16": True})
    assert avx["bf16"]["target"] == 0.5 and not avx["bf16"]["meets_target"]
    assert avx["fp32"] == {"kind": "fp32", "of_ceiling": 0.75, "target": 0.7, "meets_target": True}
    assert set(cnn_throughput.resnet_targets(rates, {"avx2": True})) == {"fp32"}
