"""The paired statistics bench/ reports next to F1 differences."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import paired_difference  # noqa: E402


def test_paired_difference_is_the_mean_and_standard_error_of_per_question_differences():
    mean, se = paired_difference([1.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    # differences in F1 points: 100, 0, 0 -> mean 33.3, sample sd 57.7, se = sd / sqrt(3)
    assert mean == pytest.approx(100 / 3)
    assert se == pytest.approx(np.std([100, 0, 0], ddof=1) / np.sqrt(3))
    assert paired_difference([0.5, 0.5], [0.5, 0.5]) == (0.0, 0.0)


def test_lat_probes_adds_up_the_training_time_of_a_resumed_run():
    from lat_probes import training_seconds
    records = [{"start_step": 0}] + [{"step": s, "loss": 1.0, "examples_per_s": 16.0} for s in (1, 2, 3, 4)]
    records += [{"step": 4, "probe": {"full": 70.0}}]  # probes carry no rate
    # resumed at step 4 (the process's rate counts from there), at half the speed
    records += [{"start_step": 4}] + [{"step": s, "loss": 1.0, "examples_per_s": 8.0} for s in (5, 6)]
    assert training_seconds(records, batch_size=16) == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 6.0, 6: 8.0}


def test_lat_probes_rows_and_gain_per_hour():
    from lat_probes import gained_per_hour, probe_rows, training_seconds
    probe = {"full": 70.0, "qualam_tokens": 67.0, "la_minilm_tokens": 68.5}
    records = [{"start_step": 0}, {"step": 0, "probe": probe}]
    records += [{"step": s, "loss": 1.0, "examples_per_s": 16.0} for s in range(1, 3601)]  # one second a step
    records += [{"step": 3600, "probe": {"full": 71.0, "qualam_tokens": 69.0, "la_minilm_tokens": 68.0}}]
    rows = probe_rows(records, training_seconds(records, batch_size=16))
    assert [(r["step"], r["hours"]) for r in rows] == [(0, 0.0), (3600, 1.0)]
    assert (rows[0]["gap_qualam_tokens"], rows[1]["gap_la_minilm_tokens"]) == (3.0, 3.0)
    names = ["full", "qualam_tokens", "la_minilm_tokens"]
    assert gained_per_hour(rows, names) == {"full": 1.0, "qualam_tokens": 2.0, "la_minilm_tokens": -0.5}
    # a first probe an hour into the run: only the hour between the probes counts
    later = [{**rows[0], "hours": 1.0}, {**rows[1], "hours": 1.5}]
    assert gained_per_hour(later, names) == {"full": 2.0, "qualam_tokens": 4.0, "la_minilm_tokens": -1.0}
    assert gained_per_hour(rows[:1], names) == {}


def test_lat_cycles_pairs_each_configuration_with_the_reference():
    from lat_cycles import paired_changes
    qualam, la = {"tokens": [315, 251, 242, 159, 142, 33]}, {"tokens": [269, 253, 252, 202, 104, 34]}
    rows = [{"model": "ref.qrt", "length_config": None, "f1": 75.0},
            {"model": "run.qrt", "length_config": None, "f1": 74.5, "f1_vs_pair_se": 0.2},
            {"model": "ref.qrt", "length_config": qualam, "f1": 73.0},
            {"model": "run.qrt", "length_config": qualam, "f1": 73.5},
            {"model": "ref.qrt", "length_config": [1.0, 0.5], "f1": 70.0},  # not one of the paper's: left out
            {"model": "run.qrt", "length_config": [1.0, 0.5], "f1": 71.0},
            {"model": "run.qrt", "length_config": la, "f1": 72.0}]  # no reference row: no change
    changes = paired_changes(rows)
    assert changes == {"full": {"f1": 74.5, "reference_f1": 75.0, "change": -0.5, "se": 0.2},
                       "qualam": {"f1": 73.5, "reference_f1": 73.0, "change": 0.5, "se": None}}


def test_a_results_header_records_a_command_that_splits_back_into_its_arguments(monkeypatch):
    """An empty argument or one with spaces (`--compare-isa ''`, `--skip "ONNX Runtime FP32"`)
    must come back as one argument when the recorded command is run again."""
    import shlex

    from common import header
    argv = ["bench/gemm_bench.py", "--compare-isa", "", "--skip", "BERT-base,ONNX Runtime FP32", "--name", "x"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("QUALAM_ISA", "avx2")
    assert shlex.split(header(2)["command"]) == ["QUALAM_ISA=avx2", Path(sys.executable).name] + argv


def test_amx_targets_judges_each_target_from_its_file_and_only_on_the_amx_path():
    from amx_targets import check
    from e2e import OPENVINO_INT8 as OPENVINO, QUALAM_FULL as FULL, QUALAM_PAPER as PAPER
    isa = {"meta": {"paths": ["avx512vnni", "amx"]},
           "rows": [{"setting": "n=384 bs=32", "config": "full", "avx512vnni_speedup": 1.0, "amx_speedup": 2.6},
                    {"setting": "n=384 bs=1", "config": "full", "avx512vnni_speedup": 1.0, "amx_speedup": 1.0}]}
    shape = {"K": 384, "N": 384, "epilogue": "bias"}
    gemm = {"meta": {"isa": "amx"},
            "rows": [{"M": 384, "fused_out_over_int_mm_out": 0.5, "qualam_fused_out_peak_frac": 0.1, **shape},
                     {"M": 1024, "fused_out_over_int_mm_out": 1.6, "qualam_fused_out_peak_frac": 0.45, **shape},
                     {"M": 4096, "fused_out_over_int_mm_out": 1.4, "qualam_fused_out_peak_frac": 0.5, **shape}]}
    mix = "SQuAD dev mix (128 windows, mean 114)"
    settings = ("n=384 bs=1", "n=384 bs=32", "n=128 bs=1", mix)
    e2e = {"meta": {"isa": "amx"},
           "rows": [{"system": FULL, **dict(zip(settings, (5.0, 5.0, 2.0, 2.0)))},
                    {"system": PAPER, **dict(zip(settings, (3.0, 2.5, 1.0, 1.0)))},
                    {"system": OPENVINO, **dict(zip(settings, (10.0, 9.0, 3.1, 2.9)))}]}
    dev = {"meta": {"isa": "amx"}, "rows": [{"attention": "int16", "f1": 79.30}, {"attention": "bf16", "f1": 79.45}]}
    got = {r["target"]: (r["measured"], r["verdict"]) for r in check(isa, gemm, e2e, dev, ("i", "g", "e", "d"))}
    assert list(got.values()) == [
        (2.6, "met"),                    # the n384 bs32 full row, not the bs1 one
        (1.4, "not met"), (0.45, "met"),  # the worst row at M >= 1024; M = 384 ignored
        (2.0, "met"), (1.8, "not met"), (1.55, "met"), (1.45, "not met"),  # OpenVINO / full, same setting
        (3.6, "met"),                    # the paper configuration against OpenVINO's full length
        (0.15, "not met")]               # |79.45 - 79.30| > 0.1
    # Files made on another path measure nothing of the amx path.
    gemm["meta"]["isa"] = e2e["meta"]["isa"] = dev["meta"]["isa"] = "avx512vnni"
    isa["meta"]["paths"] = ["avx512vnni", "avx2"]
    assert {r["verdict"] for r in check(isa, gemm, e2e, dev, ("i", "g", "e", "d"))} == {"not measured"}
    assert {r["verdict"] for r in check(None, None, None, None, ("i", "g", "e", "d"))} == {"not measured"}
