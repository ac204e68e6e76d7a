"""--pack auto, the default: a variant's seeds train packed or one by one, whichever a few timed
steps on its own model, data and batch say is faster; the decision is remembered on the
machine, so the same command trains the same way (and gives the same numbers) again."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from ablate.execution import autopack
from ablate.results import files as results
from ablate.study import planning
from ablate.study.planning import resolve
from ablate.training import train
from ablate.training.train import RunConfig

CPU = torch.device("cpu")


def runs(seeds=3, **fields):
    config = resolve(RunConfig(dataset="synthetic").with_fields(**fields))
    return [planning.Run("s", "v", seed, config) for seed in range(seeds)]


@pytest.fixture
def big_data():
    from ablate.data.datasets import load_dataset

    return load_dataset("synthetic", limit_train=4000, limit_test=100)  # 32 steps of 128 an epoch


def timed_as(monkeypatch, ratio):
    calls = []
    monkeypatch.setattr(train, "packing_speedup", lambda *a: calls.append(a) or ratio)
    return calls


@pytest.mark.parametrize("ratio, packed", [(1.4, True), (0.7, False)])
def test_the_faster_way_is_taken_and_remembered(monkeypatch, big_data, packing_decisions, ratio, packed):
    planned = runs(epochs=5)
    calls = timed_as(monkeypatch, ratio)
    (choice,) = autopack.choose(planned, big_data, CPU, None).values()
    assert (choice.packed, choice.ratio, choice.why) == (packed, ratio, "measured")
    assert calls[0][2] == 3 and 3 <= calls[0][4] <= 10  # 3 seeds; 3 to 10 timed steps of each way
    assert list(json.loads(packing_decisions.read_text()).values()) == [{"packed": packed, "ratio": ratio,
                                                                         "size": 3 if packed else 1}]
    timed_as(monkeypatch, 1 / ratio)  # measured again, it would go the other way: it is not measured again
    (again,) = autopack.choose(planned, big_data, CPU, None).values()
    assert (again.packed, again.why) == (packed, "remembered")
    other = runs(epochs=5, batch_size=64)  # another batch size: another decision
    assert autopack.choose(other, big_data, CPU, None)[other[0].config_id].why == "measured"


def test_a_variant_too_short_to_pay_for_the_probe_takes_the_devices_default(monkeypatch, big_data):
    calls = timed_as(monkeypatch, 2.0)
    (choice,) = autopack.choose(runs(epochs=1, batch_size=4000), big_data, CPU, None).values()
    assert not choice.packed and choice.why.startswith("too short to measure (1 steps)") and not calls
    budget = 20 * (4 * 4) // 3 + 1  # steps at which 3 timed steps of each way cost 5 % of 3 seeds' training
    (choice,) = autopack.choose(runs(epochs=budget, batch_size=4000), big_data, CPU, None).values()
    assert choice.why == "measured" and calls
    (choice,) = autopack.choose(runs(epochs=budget - 2, batch_size=4000), big_data, CPU, None).values()
    assert choice.why.startswith("too short")


def test_the_flags_force_it_and_one_seed_is_never_packed(monkeypatch, big_data):
    calls = timed_as(monkeypatch, 2.0)
    assert [c.said() for c in autopack.choose(runs(epochs=5), big_data, CPU, True).values()] == \
        ["packed by 3 (--pack)"]
    assert [c.said() for c in autopack.choose(runs(epochs=5), big_data, CPU, False).values()] == \
        ["one by one (--no-pack)"]
    assert [c.why for c in autopack.choose(runs(1, epochs=5), big_data, CPU, None).values()] == ["one run"]
    assert not calls


def test_the_probe_times_real_training_and_changes_no_run(tiny_data):
    config = resolve(RunConfig(dataset="synthetic", batch_size=16))
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    ratio = train.packing_speedup(config, tiny_data, 3, CPU, 3)
    assert 0.05 < ratio < 20 and torch.equal(torch.get_rng_state(), before) and torch.get_num_threads() == threads


def test_the_probe_reports_k_times_the_fastest_single_step_over_the_fastest_packed_one(tiny_data, monkeypatch):
    """The real probe, on a clock whose steps cost what the test says: the first step of each
    kind is not timed, the fastest of the rest counts, and one copy's time is multiplied by k."""
    now = [0.0]
    costs = {1: iter([0.1, 2.0, 1.0, 1.5]), 3: iter([0.5, 2.5, 2.0, 3.0])}  # seconds a step; the first untimed
    forward = train._forward

    def timed_forward(model, xs, amp):
        now[0] += next(costs[len(xs)])
        return forward(model, xs, amp)

    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(train, "_forward", timed_forward)
    config = resolve(RunConfig(dataset="synthetic", batch_size=16))
    assert train.packing_speedup(config, tiny_data, 3, CPU, 3) == pytest.approx(3 * 1.0 / 2.0)
    assert all(next(left, None) is None for left in costs.values())  # 1 untimed + 3 timed steps of each


def test_a_study_records_each_variants_choice_and_trains_that_way(tmp_path, ablate, tiny, monkeypatch):
    ratios = iter([1.5, 0.5])
    monkeypatch.setattr(train, "packing_speedup", lambda *a: next(ratios))
    monkeypatch.setattr(autopack, "BUDGET", 1e9)  # the tiny study is long enough to measure
    out = tmp_path / "a.parquet"
    result = ablate(["conv1", *tiny, "--channels", "2,4", "--seeds", "2", "--pack", "auto", "--out", out])
    assert result.exit_code == 0, result.output
    meta = results.read_metadata(out)["packing"]
    assert meta == {"2": {"packed": True, "size": 2, "ratio": 1.5, "why": "measured"},
                    "4": {"packed": False, "size": 1, "ratio": 0.5, "why": "measured"}}
    frame = pd.read_parquet(out)
    assert frame.groupby("variant")["packed"].unique().to_dict() == {"2": [2], "4": [1]}
    again = tmp_path / "b.parquet"  # the same command: the same decisions, the same numbers
    assert ablate(["conv1", *tiny, "--channels", "2,4", "--seeds", "2", "--out", again]).exit_code == 0
    assert results.read_metadata(again)["packing"]["2"]["why"] == "remembered"
    pd.testing.assert_series_equal(pd.read_parquet(again)["loss"], frame["loss"])
    dry = ablate(["conv1", *tiny, "--channels", "2,4", "--seeds", "2", "--dry-run"])
    assert "packed by 2 (1.50 x, remembered)" in dry.stdout and "one by one (0.50 x, remembered)" in dry.stdout


def test_an_unreadable_decision_file_is_measured_again(monkeypatch, big_data, packing_decisions):
    packing_decisions.write_text("not json {")
    timed_as(monkeypatch, 1.4)
    (choice,) = autopack.choose(runs(epochs=5), big_data, CPU, None).values()
    assert (choice.packed, choice.why) == (True, "measured")
    assert list(json.loads(packing_decisions.read_text()).values()) == [{"packed": True, "ratio": 1.4, "size": 3}]


@pytest.mark.parametrize("entry", [5, "packed", [], None, {}, {"ratio": "fast"}, {"packed": "yes", "ratio": 1.2},
                                   {"packed": True, "ratio": "fast"}, {"packed": True, "ratio": -1.0},
                                   {"packed": False, "ratio": float("nan")}, {"packed": 1, "ratio": 1.2},
                                   {"packed": True, "ratio": 1.2, "size": 0}, {"packed": True, "ratio": 1.2, "size": 4},
                                   {"packed": True, "ratio": 1.2, "size": 1}, {"packed": True, "ratio": 1.2, "size": 2.5},
                                   {"packed": False, "ratio": 0.8, "size": 3}])
def test_a_damaged_decision_is_measured_again_and_the_file_rewritten_whole(monkeypatch, big_data,
                                                                           packing_decisions, entry):
    planned = runs(epochs=5)
    timed_as(monkeypatch, 1.4)
    (first,) = autopack.choose(planned, big_data, CPU, None).values()
    (key,) = json.loads(packing_decisions.read_text())
    packing_decisions.write_text(json.dumps({key: entry, "other": {"ratio": "fast"}, "kept": {"packed": False,
                                                                                             "ratio": 0.8}}))
    timed_as(monkeypatch, 0.7)
    (choice,) = autopack.choose(planned, big_data, CPU, None).values()
    assert (choice.packed, choice.ratio, choice.why) == (False, 0.7, "measured")
    assert json.loads(packing_decisions.read_text()) == {key: {"packed": False, "ratio": 0.7, "size": 1},
                                                         "kept": {"packed": False, "ratio": 0.8}}


def test_the_pack_size_that_trains_fastest_is_taken_and_larger_ones_stop_being_tried(monkeypatch, big_data,
                                                                                    packing_decisions):
    """Packs of 2, 4, 8, ... and all of them are timed while they get faster; once a size is
    clearly slower per run than the best, larger ones are not tried."""
    speed = {2: 1.2, 4: 1.5, 8: 1.3, 10: 3.0}
    tried = []
    monkeypatch.setattr(train, "packing_speedup", lambda config, data, k, device, steps: tried.append(k) or speed[k])
    monkeypatch.setattr(autopack, "BUDGET", 1e9)
    (choice,) = set(autopack.choose(runs(10, epochs=5), big_data, CPU, None).values())
    assert (choice.packed, choice.size, choice.ratio, choice.why) == (True, 4, 1.5, "measured")
    assert tried == [2, 4, 8]  # 8 is under 0.9 x 1.5: 10 is not tried
    assert list(json.loads(packing_decisions.read_text()).values()) == [{"packed": True, "ratio": 1.5, "size": 4}]
    assert autopack.sizes(10) == [2, 4, 8, 10] and autopack.sizes(8) == [2, 4, 8] and autopack.sizes(2) == [2]


def test_no_faster_size_means_one_by_one(monkeypatch, big_data, packing_decisions):
    monkeypatch.setattr(train, "packing_speedup", lambda config, data, k, device, steps: 0.8)
    monkeypatch.setattr(autopack, "BUDGET", 1e9)
    (choice,) = set(autopack.choose(runs(5, epochs=5), big_data, CPU, None).values())
    assert (choice.packed, choice.size) == (False, 1)


def test_variants_that_share_a_network_are_decided_together_and_others_apart(monkeypatch, big_data):
    """Another learning rate or augmentation shares the decision (and the packs); another
    batch size, optimiser or architecture is decided on its own."""
    calls = []
    monkeypatch.setattr(train, "packing_speedup", lambda *a: calls.append(a) or 1 + a[2] / 10)  # larger is faster
    monkeypatch.setattr(autopack, "BUDGET", 1e9)
    shared = [*runs(epochs=5, lr=0.1), *runs(epochs=5, lr=0.01), *runs(epochs=5, augment="crop+flip")]
    apart = [*runs(epochs=5, batch_size=64), *runs(epochs=5, optimizer="adam", lr=0.001, momentum=None),
             *runs(epochs=5, model="mlp")]
    choices = autopack.choose(shared + apart, big_data, CPU, None)
    assert len(choices) == 6 and len({id(choices[r.config_id]) for r in shared}) == 1
    assert choices[shared[0].config_id].size == 9 and {choices[r.config_id].size for r in apart} == {3}
    assert sorted(call[2] for call in calls) == [2, 2, 2, 2, 3, 3, 3, 4, 8, 9]  # 9 members: 2, 4, 8, 9


def test_an_earlier_versions_decision_without_a_size_packed_them_all(big_data, packing_decisions, monkeypatch):
    planned = runs(epochs=5)
    timed_as(monkeypatch, 1.4)
    autopack.choose(planned, big_data, CPU, None)
    (key,) = json.loads(packing_decisions.read_text())
    packing_decisions.write_text(json.dumps({key: {"packed": True, "ratio": 1.3}}))
    (choice,) = autopack.choose(planned, big_data, CPU, None).values()
    assert (choice.packed, choice.size, choice.why) == (True, 3, "remembered")
