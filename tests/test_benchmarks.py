"""The benchmark scripts run, write rows of the results schema, and draw their figures.

Every script runs once in its smallest mode (`--smoke`: tiny shapes, synthetic
data, a few batches), in a subprocess as a user would run it, writing into a
temporary folder and never into benchmarks/results. No timing is asserted. What
is checked: the rows follow the schema, every number is finite and positive with
p20 <= p50 <= p80, and each derived rate times its time gives back the work the
case was sized with (computed here from the shapes, independently of the scripts).
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from benchmark_scripts import BENCHMARKS_DIR, load_script
SCRIPT_TIMEOUT_SECONDS = 300  # a bound for a hung script, far above a smoke run

ON_GPU = torch.cuda.is_available()
TRITONNET = "tritonnet" if ON_GPU else "tritonnet-reference"

# CSV numbers are written with 6 significant digits: a product of two of them is
# off by at most about 1e-5 relative.
CSV_ROUNDING = 1e-4


harness = load_script("harness")
peaks = load_script("peaks")
kernel_time = load_script("kernel_time")


def run_script(name: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS_DIR / f"{name}.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
    )


def read_csv(path: Path) -> tuple[tuple[str, ...], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return tuple(reader.fieldnames or ()), list(reader)


def value(rows: list[dict[str, str]], **match: str) -> float:
    """The p50 of the one row matching every column given."""
    found = [row for row in rows if all(row[key] == wanted for key, wanted in match.items())]
    assert len(found) == 1, f"expected one row for {match}, got {len(found)}"
    return float(found[0]["p50"])


@dataclass
class SmokeRun:
    exit_code: int
    results_dir: Path
    figures_dir: Path

    def rows(self, benchmark: str) -> list[dict[str, str]]:
        columns, rows = read_csv(self.results_dir / f"{benchmark}.csv")
        assert columns == harness.RESULT_COLUMNS
        return rows


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> SmokeRun:
    """`benchmarks/run.py --smoke` once, through `main(argv)` as `tritonnet bench` calls it."""
    root = tmp_path_factory.mktemp("benchmarks")
    results_dir, figures_dir = root / "results", root / "figures"
    run = load_script("run")
    exit_code = run.main(
        ["--smoke", "--results-dir", str(results_dir), "--figures-dir", str(figures_dir)]
    )
    return SmokeRun(exit_code, results_dir, figures_dir)


def test_run_smoke_succeeds(smoke_run):
    assert smoke_run.exit_code == 0


@pytest.mark.parametrize("benchmark", ["launch", "linear", "softmax", "output_layer", "training"])
def test_rows_follow_the_schema_with_sane_numbers(smoke_run, benchmark):
    assert_sane_rows(smoke_run.rows(benchmark), benchmark, torch.device("cuda" if ON_GPU else "cpu"))


def test_data_parallel_benchmark_times_every_exchange(tmp_path):
    result = run_script("bench_data_parallel", "--smoke", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    columns, rows = read_csv(tmp_path / "data_parallel.csv")
    assert columns == harness.RESULT_COLUMNS
    assert_sane_rows(rows, "data_parallel", torch.device("cpu"))
    assert {row["provider"] for row in rows} == {"bucket", "per-layer-overlap", "barrier-only"}


def assert_sane_rows(rows: list[dict[str, str]], benchmark: str, device: torch.device) -> None:
    assert rows, f"{benchmark}.csv has no rows"
    # One run: one timestamp, one device, the machine this test runs on.
    assert {row["timestamp"] for row in rows} == {rows[0]["timestamp"]}
    assert {row["device"] for row in rows} == {harness.device_name(device)}
    assert {row["torch"] for row in rows} == {torch.__version__}
    for row in rows:
        assert row["benchmark"] == benchmark
        assert all(row[column] for column in harness.RESULT_COLUMNS), row
        p50, p20, p80 = (float(row[name]) for name in ("p50", "p20", "p80"))
        assert all(math.isfinite(number) and number > 0 for number in (p50, p20, p80)), row
        assert p20 <= p50 <= p80, row
        assert int(row["x_value"]) > 0


@pytest.mark.parametrize(
    "benchmark, floor",
    [("linear", "torch-mm"), ("softmax", "torch-copy"), ("output_layer", "torch-mm")],
)
def test_kernel_benchmarks_time_every_default_provider(smoke_run, benchmark, floor):
    providers = {row["provider"] for row in smoke_run.rows(benchmark)}
    # A smoke run leaves torch.compile out (see kernel_common.kernel_providers).
    assert providers == {"tritonnet", "torch-eager", floor}


def test_launch_times_every_operation_against_its_torch_twin(smoke_run):
    rows = smoke_run.rows("launch")
    # On a CPU, tritonnet's own host work with the launch left out; no twin to time.
    providers = ["tritonnet", "torch"] if ON_GPU else ["tritonnet-host"]
    for provider in providers:
        operations = {row["mode"] for row in rows if row["provider"] == provider}
        assert {"linear_forward sigmoid fp32", "linear_cross_entropy fp32", "sgd_update fp32"} <= operations
        assert {"functional.linear_sigmoid forward+backward fp32"} <= operations
    assert {row["provider"] for row in rows} == set(providers)
    assert {row["metric"] for row in rows} == {"host_time"}


def _rows_of_case(rows, row):
    return [
        other
        for other in rows
        if (other["provider"], other["mode"], other["x_value"])
        == (row["provider"], row["mode"], row["x_value"])
    ]


def test_softmax_bandwidth_times_time_is_the_bytes_read_and_written(smoke_run):
    rows = smoke_run.rows("softmax")
    for row in (row for row in rows if row["metric"] == "time"):
        case = _rows_of_case(rows, row)
        element_size = {"fp32": 4, "bf16": 2}[row["mode"].split()[-1]]
        rows_count = int(row["mode"].split()[0])
        expected_bytes = 2 * rows_count * int(row["x_value"]) * element_size
        seconds = float(row["p50"]) * 1e-6
        measured_bytes = value(case, metric="bandwidth") * 1e9 * seconds
        assert measured_bytes == pytest.approx(expected_bytes, rel=CSV_ROUNDING)


def test_linear_tflops_times_time_is_the_matmul_work(smoke_run):
    rows = smoke_run.rows("linear")
    for row in (row for row in rows if row["metric"] == "time"):
        pass_name, shape, _ = row["mode"].split()
        in_features, out_features = (int(size) for size in shape.split("x"))
        matmuls = 1 if pass_name == "forward" else 3  # the backward adds grad_input and grad_weight
        expected_flops = matmuls * 2 * int(row["x_value"]) * in_features * out_features
        measured_flops = (
            value(_rows_of_case(rows, row), metric="tflops") * 1e12 * float(row["p50"]) * 1e-6
        )
        assert measured_flops == pytest.approx(expected_flops, rel=CSV_ROUNDING)


def test_training_steps_per_second_times_epoch_is_the_steps(smoke_run):
    rows = smoke_run.rows("training")
    providers = {row["provider"] for row in rows}
    assert {TRITONNET, "torch-eager", "exercise-style"} <= providers
    for row in (row for row in rows if row["metric"] == "epoch_time"):
        assert row["mode"] == "synthetic fp32-ieee 3-batch epochs"
        rate = value(_rows_of_case(rows, row), metric="steps_per_second")
        # --smoke stops every epoch after 3 batches (bench_training.parse_arguments).
        assert rate * float(row["p50"]) * 1e-3 == pytest.approx(3, rel=CSV_ROUNDING)


def test_training_speedup_is_the_ratio_of_epoch_medians(smoke_run):
    rows = smoke_run.rows("training")
    for batch in ("64", "1024"):
        ours = value(rows, provider=TRITONNET, metric="epoch_time", x_value=batch)
        theirs = value(rows, provider="torch-eager", metric="epoch_time", x_value=batch)
        speedup = value(rows, provider=TRITONNET, metric="speedup_vs_torch_eager", x_value=batch)
        assert speedup == pytest.approx(theirs / ours, rel=CSV_ROUNDING)


def test_plot_writes_a_png_per_benchmark_and_metric(smoke_run):
    expected = [
        "bench_linear_time.png",
        "bench_linear_tflops.png",
        "bench_softmax_bandwidth.png",
        "bench_output_layer_time.png",
        "bench_training_epoch_time.png",
        "bench_training_steps_per_second.png",
    ]
    for name in expected:
        path = smoke_run.figures_dir / name
        assert path.exists(), f"{name} not drawn"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_prints_a_markdown_table_per_metric(smoke_run):
    result = run_script(
        "report", "--results-dir", str(smoke_run.results_dir), "--metrics", "epoch_time"
    )
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:2] == ["mode", "batch"] and TRITONNET in header and "torch-eager" in header
    assert len(table) == 2 + 2  # header, rule, batch 64 and batch 1024
    assert "steps_per_second" not in result.stdout


def test_time_to_accuracy_reports_time_and_accuracy(tmp_path):
    result = run_script(
        "bench_training",
        "--smoke",
        "--time-to-accuracy",
        "--batch-sizes",
        "64",
        "--providers",
        f"{TRITONNET},torch-eager",
        "--results-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    columns, rows = read_csv(tmp_path / "time_to_accuracy.csv")
    assert columns == harness.RESULT_COLUMNS
    for provider in (TRITONNET, "torch-eager"):
        assert value(rows, provider=provider, metric="train_time") > 0
        assert 0 <= value(rows, provider=provider, metric="test_accuracy") <= 1


@pytest.mark.parametrize("precision", ["fp32-tf32", "bf16"])
def test_training_precision_names_every_row_and_leaves_out_what_has_no_such_path(tmp_path, precision):
    result = run_script(
        "bench_training", "--smoke", "--precision", precision, "--batch-sizes", "64", "--results-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    _, rows = read_csv(tmp_path / "training.csv")
    assert rows and all(precision in row["mode"].split() for row in rows)
    providers = {row["provider"] for row in rows}
    # The exercise's hand-written layers have no bf16 path; every other provider runs.
    assert ("exercise-style" in providers) == (precision != "bf16")
    assert {TRITONNET, "torch-eager"} <= providers
    assert all(value(rows, provider=name, metric="epoch_time") > 0 for name in providers)


@pytest.mark.skipif(ON_GPU, reason="on a GPU the kernel benchmarks measure instead of skipping")
@pytest.mark.parametrize("benchmark", ["bench_linear", "bench_softmax", "bench_output_layer"])
def test_kernel_benchmarks_skip_without_cuda(tmp_path, benchmark):
    result = run_script(benchmark, "--quick", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "skipped: needs CUDA"
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(ON_GPU, reason="on a GPU these providers run instead of skipping")
def test_training_providers_that_need_cuda_are_skipped_by_name_on_a_cpu(tmp_path):
    gpu_only = ["torch-cuda-graph", "tritonnet-epoch-graph", "torch-compile-max-autotune"]
    result = run_script(
        "bench_training",
        "--smoke",
        "--batch-sizes",
        "64",
        "--epochs",
        "1",
        "--providers",
        ",".join(["torch-eager", *gpu_only]),
        "--results-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    for name in gpu_only:
        assert f"skipped: {name} needs CUDA" in result.stdout
    _, rows = read_csv(tmp_path / "training.csv")
    assert {row["provider"] for row in rows} == {"torch-eager"}


def _device_event(name: str, start: float, end: float, device_type):
    from torch.autograd.profiler_util import FunctionEvent

    return FunctionEvent(id=0, name=name, thread=0, start_us=start, end_us=end, device_type=device_type)


def test_kernel_time_sums_each_kernels_device_events_per_step():
    from torch.autograd import DeviceType

    events = [
        _device_event("gemm", 0, 3, DeviceType.CUDA),
        _device_event("aten::mm", 0, 50, DeviceType.CPU),  # the host's side: left out
        _device_event("sigmoid", 3, 4, DeviceType.CUDA),
        _device_event("gemm", 10, 15, DeviceType.CUDA),
        _device_event("Memcpy DtoD", 20, 22, DeviceType.CUDA),
    ]
    per_step = kernel_time.kernel_time_per_step(events, steps=2)
    assert per_step == {"gemm": 4.0, "Memcpy DtoD": 1.0, "sigmoid": 0.5}
    assert list(per_step) == ["gemm", "Memcpy DtoD", "sigmoid"]  # busiest first
    with pytest.raises(ValueError, match="steps"):
        kernel_time.kernel_time_per_step(events, steps=0)


def test_a_provider_that_cannot_run_here_is_refused_by_name():
    with pytest.raises(SystemExit, match="no-such-provider"):
        harness.select_providers(["torch-eager"], ["torch-eager"], ["no-such-provider"])


def test_requested_providers_replace_the_default_in_the_available_order():
    available = ["tritonnet", "torch-eager", "torch-compile"]
    chosen = harness.select_providers(available, ["tritonnet"], ["torch-compile", "torch-eager"])
    assert chosen == ["torch-eager", "torch-compile"]


def test_writer_appends_under_one_header_and_refuses_other_columns(tmp_path):
    environment = harness.Environment.detect(torch.device("cpu"))
    timing = harness.Quantiles(2.0, 1.0, 3.0)
    for _ in range(2):
        harness.ResultWriter("example", tmp_path, environment).add(
            "p", "m", "batch", 8, "time", "us", timing
        )
    lines = (tmp_path / "example.csv").read_text().splitlines()
    assert lines[0] == ",".join(harness.RESULT_COLUMNS)
    assert len(lines) == 3

    (tmp_path / "other.csv").write_text("benchmark,provider,ms\n")
    with pytest.raises(ValueError, match="other.csv has columns"):
        harness.ResultWriter("other", tmp_path, environment)


def test_rate_takes_its_percentiles_from_the_opposite_times():
    seconds = harness.Quantiles(p50=2.0, p20=1.0, p80=4.0)
    assert seconds.rate(8.0) == harness.Quantiles(p50=4.0, p20=2.0, p80=8.0)


def test_quantiles_of_samples_are_ordered_percentiles():
    samples = [float(number) for number in torch.randperm(101)]  # 0..100 shuffled
    quantiles = harness.Quantiles.of(samples)
    assert (quantiles.p50, quantiles.p20, quantiles.p80) == pytest.approx((50.0, 20.0, 80.0))


@pytest.mark.parametrize(
    "name, bandwidth",
    [
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA A100-SXM4-80GB", 2039.0),
        ("NVIDIA A100 80GB PCIe", 1935.0),
        ("NVIDIA A100-SXM4-40GB", 1555.0),
    ],
)
def test_peak_lookup_picks_the_specific_card_before_the_family(name, bandwidth):
    # The bandwidths are the datasheet values listed in benchmarks/peaks.py; what is
    # tested is that each name finds its own card and not a broader match.
    assert peaks.peak_for(name).bandwidth_gbs == bandwidth


def test_peak_lookup_has_no_peak_for_a_cpu():
    assert peaks.peak_for(harness.cpu_model()) is None


def test_committed_training_results_follow_the_schema():
    columns, rows = read_csv(BENCHMARKS_DIR / "results" / "training.csv")
    assert columns == harness.RESULT_COLUMNS
    assert {"epoch_time", "steps_per_second"} <= {row["metric"] for row in rows}
    assert all(re.fullmatch(r"[0-9a-f]{4,40}|unknown", row["commit"]) for row in rows)


def test_time_in_turns_times_each_function_in_turn():
    calls: list[str] = []
    functions = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    result = harness.time_in_turns(functions, torch.device("cpu"), warmup=2, repeats=3)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-ups, then one call each per turn
    assert set(result) == {"a", "b"}
    assert all(0 < seconds.p20 <= seconds.p50 <= seconds.p80 for seconds in result.values())
