"""--dry-run's estimate: the rates of a short real training, and a run's arithmetic from them;
an existing --out is read as --resume would read it, and said. (How close the estimate comes
to the real time is benchmarks/dry_run.py's: a timing, not a test.)"""

import pytest

from ablate.execution import estimate
from ablate.study.planning import resolve
from ablate.training.train import EpochRecord, RunConfig, RunResult

TINY = ["--dataset", "synthetic", "--limit-train", "120", "--limit-test", "60", "--epochs", "2",
        "--batch-size", "30", "--device", "cpu"]


def test_a_run_costs_its_fixed_part_its_training_images_and_its_evaluations():
    cost = estimate.Cost(fixed=2.0, train=0.01, evaluate=0.001)
    config = RunConfig(epochs=3)
    # 3 epochs of 1,000 images; the train split evaluated once (epoch 0), the test split 4 times
    assert cost.of(config, 1000, 200) == pytest.approx(2.0 + 3 * 1000 * 0.01 + (1000 + 4 * 200) * 0.001)
    few = RunConfig(epochs=3, labels=100)  # the labelled few train
    assert cost.of(few, 1000, 200) == pytest.approx(2.0 + 3 * 100 * 0.01 + (100 + 4 * 200) * 0.001)


def test_the_rates_come_from_the_probes_records_and_its_wall_time(monkeypatch, tiny_data):
    config = resolve(RunConfig(dataset="synthetic", batch_size=30))
    seconds = {(0, "train"): 0.3, (0, "test"): 0.2, (1, "train"): 1.2, (1, "test"): 0.2, (2, "train"): 0.9,
               (2, "test"): 0.4}
    records = [EpochRecord(e, s, 1.0, {}, 0.1, t) for (e, s), t in seconds.items()]
    calls = []

    def probe(short, data, seeds, device, pack):
        calls.append((short, len(data.train_y), len(data.test_y), seeds, pack))
        clock[0] += sum(seconds.values()) + 0.5  # 0.5 s of it outside the records: the fixed part
        return [RunResult(records, [], "ok", None, None)]

    clock = [100.0]
    monkeypatch.setattr(estimate.train, "train_runs", probe)
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: clock[0])
    cost = estimate.measure(config, tiny_data, "cpu")
    (short, images, tests, seeds, pack), = calls
    assert (short.epochs, images, tests, seeds, pack) == (2, 3 * 30, 100, [0], False)  # 3 batches, the test split
    assert cost.train == pytest.approx(0.9 / 90)  # the last epoch's, warm: not the first's 1.2
    assert cost.evaluate == pytest.approx((0.2 + 0.2 + 0.4) / 3 / 100)
    assert cost.fixed == pytest.approx(0.5)


def test_a_dry_run_on_an_existing_out_says_what_it_holds_and_what_resume_would_train(tmp_path, ablate,
                                                                                    monkeypatch):
    out = tmp_path / "s.parquet"
    assert ablate(["conv1", *TINY, "--channels", "2,4", "--out", out]).exit_code == 0
    before = out.read_bytes()
    dry = ablate(["conv1", *TINY, "--channels", "2,4", "--seeds", "2", "--out", out, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    said = " ".join(dry.output.split())
    assert f"note: '{out}' exists and holds 2 runs: this is what --resume would train" in said
    assert "4 runs planned, 2 already in" in said and "2 to train" in said
    other = ablate(["conv1", *TINY, "--epochs", "3", "--channels", "2,4", "--out", out, "--dry-run"])
    assert other.exit_code == 0, other.output
    said = " ".join(other.output.split())
    assert "holds runs made with other settings" in said and "this is what --force would train" in said
    assert "2 runs planned, 0 already in" in said
    assert out.read_bytes() == before  # read, never written
    refused = ablate(["conv1", *TINY, "--channels", "2,4", "--seeds", "2", "--out", out])
    assert refused.exit_code == 2 and "add --resume" in refused.stderr  # the study itself still refuses


def test_runs_that_share_a_speed_are_timed_once(monkeypatch, tmp_path, ablate):
    measured = []
    real = estimate.measure

    def counted(config, data, device, seeds=1, packed=False):
        measured.append(config.lr)
        return real(config, data, device, seeds, packed)

    monkeypatch.setattr(estimate, "measure", counted)
    monkeypatch.chdir(tmp_path)
    result = ablate(["lr", *TINY, "--values", "0.01,0.1,0.3", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert len(measured) == 1  # three learning rates, one speed
