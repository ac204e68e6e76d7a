"""Component studies: the designs (full, the textbook's fractions, leave-one-out, add-one-in),
their aliases, and the effects the report computes from them, exactly, on results that are a
known function of the components."""

import io

import numpy as np
import pandas as pd
import pytest

from ablate.reporting import compare, effects
from ablate.study import designs, studies
from ablate.study.designs import Component

TINY = ["--dataset", "synthetic", "--limit-train", "100", "--limit-test", "50", "--epochs", "1", "--batch-size", "50",
        "--device", "cpu"]


def _design(kind: str, names: str) -> designs.Design:
    return designs.make(kind, [Component(n, 0, 1) for n in names])


def _word(word) -> str:
    return "".join(sorted(word))


# ---------------------------------------------------------------- the designs


def test_the_six_factor_fraction_has_the_textbooks_defining_relation_and_alias_chains():
    """Montgomery, Design and Analysis of Experiments, the 2^(6-2) design of resolution IV with
    E = ABC, F = BCD: I = ABCE = BCDF = ADEF, and its seven chains of two-factor interactions."""
    design = _design("fractional", "ABCDEF")
    assert len(design.rows) == 16 and design.resolution == 4
    assert {_word(w): s for w, s in design.relation().items()} == {"ABCE": 1, "BCDF": 1, "ADEF": 1}
    assert sorted(_word(t) for t, _ in design.aliases(("A",))) == sorted(["BCE", "DEF", "ABCDF"])
    chains = {design.said(pair, chain) for pair, chain in design.interactions()}
    assert chains == {"A×B + C×E", "A×C + B×E", "A×D + E×F", "A×E + B×C + D×F", "A×F + D×E", "B×D + C×F",
                      "B×F + C×D"}


def test_the_seven_factor_fraction_has_the_textbooks_defining_relation():
    """2^(7-3) IV, E = ABC, F = BCD, G = ACD: I = ABCE = BCDF = ACDG = ADEF = BDEG = ABFG = CEFG."""
    design = _design("fractional", "ABCDEFG")
    assert {_word(w) for w in design.relation()} == {"ABCE", "BCDF", "ACDG", "ADEF", "BDEG", "ABFG", "CEFG"}


@pytest.mark.parametrize("k, runs, resolution", [(1, 2, None), (3, 8, None), (4, 8, 4), (5, 16, 5), (6, 16, 4),
                                                 (7, 16, 4), (8, 16, 4), (9, 32, 4), (10, 32, 4), (11, 32, 4),
                                                 (12, 32, 4)])
def test_every_fraction_is_the_smallest_of_resolution_four_and_holds_the_all_off_variant(k, runs, resolution):
    names = [f"c{i}" for i in range(k)]
    design = _design("fractional", names)
    x = 2 * np.array(design.rows) - 1
    assert len(design.rows) == runs and design.resolution == resolution
    assert len(set(design.rows)) == runs and design.rows[0] == (0,) * k  # the baseline first
    assert (x.T @ x == runs * np.eye(k)).all()  # main effects orthogonal: each estimated on its own
    for added, base, sign in design.generators:  # each added column is its generator's product, signed
        assert (x[:, names.index(added)] == sign * np.prod([x[:, names.index(b)] for b in base], axis=0)).all()
    for pair, chain in design.interactions():  # no two-factor interaction is aliased with a main effect
        assert all(len(t) >= 2 for t, _ in chain)


def test_a_generator_of_even_length_is_signed_so_that_the_baseline_is_in_the_design():
    design = _design("fractional", "ABCDE")  # E = -ABCD: all off gives E off
    assert design.generators == (("E", ("A", "B", "C", "D"), -1),)
    assert design.said(("A", "B"), most=3) == "A×B − C×D×E"


def test_leave_one_out_and_add_one_in_have_k_plus_one_variants():
    loo, add = _design("leave-one-out", "abc"), _design("add-one-in", "abc")
    assert list(loo.variants()) == ["all", "all but a", "all but b", "all but c"]
    assert list(add.variants()) == ["none", "a", "b", "c"]
    assert loo.variants()["all but b"] == {"a": 1, "b": 0, "c": 1}


def test_the_design_survives_the_files_metadata_and_damage_reads_as_none():
    design = _design("fractional", "ABCDEF")
    again = designs.Design.from_metadata(design.to_metadata())
    assert again == design
    meta = design.to_metadata()
    full = _design("full", "abc").to_metadata()
    loo = _design("leave-one-out", "abc").to_metadata()
    for damage in ({**full, "variants": dict(list(full["variants"].items())[:6])},  # two variants gone
                   {**loo, "variants": {k: v for k, v in loo["variants"].items() if k != "all"}},
                   {**meta, "design": "full"},  # a fraction's rows called full
                   {**meta, "design": "half"}, {**meta, "variants": {"none": [0, 2, 0, 0, 0, 0]}},
                   {**meta, "components": "x"}, {**meta, "generators": [{"component": "Z", "product": ["A"],
                                                                          "sign": 1}]}, None, [], {}):
        assert designs.Design.from_metadata(damage) is None


# ---------------------------------------------------------------- effects of a known function


def _frame(design: designs.Design, value, seeds=range(5)) -> pd.DataFrame:
    """One test row per (variant, seed) of the design: accuracy = value(on-components as a
    dict of 0/1, seed)."""
    rows = []
    for variant, row in design.row_of().items():
        on = dict(zip(design.names, row))
        for seed in seeds:
            rows.append({"study": "c", "variant": variant, "seed": seed, "split": "test", "task": "classify",
                         "loss": 1 - value(on, seed), "accuracy": value(on, seed)})
    return pd.DataFrame(rows)


def _estimates(design, frame) -> dict:
    table, _ = effects.effects(frame, {"c": design})
    table = table[table["metric"] == "test_accuracy"]
    return {(k, t): e for k, t, e in zip(table["kind"], table["term"], table["estimate"])}


def full_value(on, seed):  # a's own effect varies with the seed (mean 0.10), the seeds shift everything
    return (0.6 + (0.10 + 0.01 * (seed - 2)) * on["a"] + 0.20 * on["b"] + 0.05 * on["c"] + 0.03 * on["a"] * on["b"]
            + 0.002 * seed ** 2)


def test_a_full_designs_effects_shapley_shares_and_ladder_come_out_exactly():
    got = _estimates(_design("full", "abc"), _frame(_design("full", "abc"), full_value))
    expected = {("main", "a"): 11.5, ("main", "b"): 21.5, ("main", "c"): 5.0,  # on minus off, over the design
                ("interaction", "a×b"): 1.5, ("interaction", "a×c"): 0.0, ("interaction", "b×c"): 0.0,
                ("total", "all − none"): 38.0,
                ("shapley", "a"): 11.5, ("shapley", "b"): 21.5, ("shapley", "c"): 5.0,  # a×b shared in half
                ("ladder", "a"): 10.0, ("ladder", "b"): 23.0, ("ladder", "c"): 5.0}  # b takes all of a×b
    assert got == pytest.approx(expected, abs=1e-9)
    reordered = _estimates(_design("full", "bac"), _frame(_design("full", "bac"), full_value))
    assert reordered[("ladder", "b")] == pytest.approx(20.0) and reordered[("ladder", "a")] == pytest.approx(13.0)
    assert reordered[("shapley", "a")] == pytest.approx(11.5)  # the shares do not depend on the order


def test_the_shapley_shares_sum_to_all_on_minus_all_off_in_every_seed():
    design = _design("full", "abcde")
    values = np.random.default_rng(0).normal(size=(7, len(design.rows)))
    estimates = {(k, t): e for k, t, _, e in effects.per_seed(design, values)}
    shares = sum(estimates[("shapley", n)] for n in design.names)
    assert shares == pytest.approx(estimates[("total", "all − none")], abs=1e-12)
    assert shares == pytest.approx(values[:, -1] - values[:, 0], abs=1e-12)  # all on is the last row


def test_a_fractions_estimates_are_the_sums_of_their_aliases_with_their_signs():
    def pm(on, name):
        return 2 * on[name] - 1

    design = _design("fractional", "ABCD")  # I = ABCD: A×B + C×D
    got = _estimates(design, _frame(design, lambda on, seed: 0.5 + 0.05 * pm(on, "A") + 0.1 * pm(on, "B")
                                    + 0.02 * pm(on, "A") * pm(on, "B") + 0.03 * pm(on, "C") * pm(on, "D")))
    assert got == pytest.approx({("main", "A"): 10.0, ("main", "B"): 20.0, ("main", "C"): 0.0, ("main", "D"): 0.0,
                                 ("interaction", "A×B"): 10.0, ("interaction", "A×C"): 0.0,
                                 ("interaction", "A×D"): 0.0}, abs=1e-9)
    design = _design("fractional", "ABCDE")  # I = -ABCDE: A×B estimates A×B - C×D×E
    got = _estimates(design, _frame(design, lambda on, seed: 0.5 + 0.03 * pm(on, "C") * pm(on, "D") * pm(on, "E")))
    assert got[("interaction", "A×B")] == pytest.approx(-6.0, abs=1e-9)


def test_leave_one_out_drops_and_add_one_in_gains():
    def value(on, seed):
        return 0.5 + 0.1 * on["a"] + 0.2 * on["b"] * on["c"] + 0.001 * seed

    loo = _design("leave-one-out", "abc")
    assert _estimates(loo, _frame(loo, value)) == pytest.approx(
        {("drop", "a"): 10.0, ("drop", "b"): 20.0, ("drop", "c"): 20.0}, abs=1e-9)
    add = _design("add-one-in", "abc")
    assert _estimates(add, _frame(add, value)) == pytest.approx(
        {("gain", "a"): 10.0, ("gain", "b"): 0.0, ("gain", "c"): 0.0}, abs=1e-9)


def test_the_intervals_are_t_intervals_over_the_seeds():
    from scipy import stats

    design = _design("full", "abc")
    table, _ = effects.effects(_frame(design, full_value), {"c": design})
    row = table[(table["kind"] == "main") & (table["term"] == "a") & (table["metric"] == "test_accuracy")].iloc[0]
    per_seed = np.array([11.5 + (s - 2) for s in range(5)])  # a's main effect in each seed, in points
    half = stats.t.ppf(0.975, 4) * per_seed.std(ddof=1) / np.sqrt(5)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((11.5 - half, 11.5 + half))
    assert row["significant"] and row["seeds"] == 5


def test_the_stars_are_holms_over_a_studys_effects_of_one_metric():
    from statsmodels.stats.multitest import multipletests

    def value(on, seed):  # each effect noisy: a clearly, c barely resolved on its own
        wobble = np.random.default_rng([seed, on["a"], on["b"], on["c"]]).normal(0, 0.01)
        return 0.5 + 0.05 * on["a"] + 0.01 * on["c"] + wobble

    design = _design("full", "abc")
    frame = _frame(design, value, seeds=range(4))
    holm, _ = effects.effects(frame, {"c": design})
    alone, _ = effects.effects(frame, {"c": design}, correction="none")
    for metric in ("test_accuracy", "test_loss"):
        rows = holm[holm["metric"] == metric]
        reject, adjusted, _, _ = multipletests(rows["p_value"], alpha=0.05, method="holm")
        assert rows["p_adjusted"].tolist() == pytest.approx(adjusted.tolist())
        assert rows["significant"].tolist() == reject.tolist()
        own = alone[alone["metric"] == metric]
        assert own["significant"].tolist() == ((own["ci_low"] > 0) | (own["ci_high"] < 0)).tolist()
        assert (own["p_adjusted"] == own["p_value"]).all() and set(own["correction"]) == {"none"}
    accuracy = holm["metric"] == "test_accuracy"
    assert holm[accuracy]["significant"].sum() < alone[alone["metric"] == "test_accuracy"]["significant"].sum()


def test_a_seed_missing_a_variant_is_left_out_of_the_effects_and_said():
    design = _design("full", "ab")
    frame = _frame(design, lambda on, seed: 0.5 + 0.1 * on["a"])
    frame.loc[(frame["variant"] == "b") & (frame["seed"] == 3), "accuracy"] = np.nan
    table, notes = effects.effects(frame, {"c": design})
    assert set(table["seeds"]) == {4} and "4 of 5 seeds" in notes[0]


# ---------------------------------------------------------------- the command line


@pytest.fixture
def component_file(fake_study, tmp_path):
    design = designs.make("full", [Component("a", 0.0, 0.5), Component("b", 0.0, 0.5), Component("c", 0.0, 0.5)])
    rows = list(design.row_of().values())

    def noise(v, seed):  # fake_study adds 0.1 v + 0.01 seed: taken back, then full_value
        return -0.1 * v - 0.01 * seed + full_value(dict(zip("abc", rows[v])), seed) - 0.5

    return fake_study(tmp_path / "c.parquet", variants=list(design.row_of()), seeds=range(5), study="c",
                      noise=noise, plot="effects", components=design.to_metadata())


def test_the_report_prints_and_writes_the_effects(component_file, ablate, tmp_path):
    out = ablate(["report", component_file])
    assert out.exit_code == 0, out.output
    assert "what each component contributes" in out.output and "Shapley share" in out.output
    assert "+11.50 [" in out.output and "+38.00 [" in out.output
    table = pd.read_csv(io.StringIO(ablate(["report", component_file, "--format", "csv", "--table", "effects"]).stdout))
    main = table[(table["kind"] == "main") & (table["metric"] == "test_accuracy")].set_index("term")["estimate"]
    assert main.to_dict() == pytest.approx({"a": 11.5, "b": 21.5, "c": 5.0})
    assert set(table["correction"]) == {"holm"} and "family-wise 5 % over the table's 13 rows" in " ".join(out.stdout.split())
    alone = ablate(["report", component_file, "--correction", "none"])
    assert "each effect on its own, uncorrected" in " ".join(alone.stdout.split())
    assert ablate(["report", component_file, "--html", tmp_path / "r.html"]).exit_code == 0
    assert "What each component contributes" in (tmp_path / "r.html").read_text()
    assert ablate(["plot", component_file, "-o", tmp_path / "e.png"]).exit_code == 0  # its natural figure
    assert (tmp_path / "e.png").stat().st_size > 10_000


def test_a_table_to_write_needs_a_format_to_write_it(component_file, ablate):
    out = ablate(["report", component_file, "--table", "effects"])
    assert out.exit_code == 2 and "chooses what --format csv or json writes" in out.output


def test_an_optimizer_component_keeps_a_study_files_learning_rate(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[base]\nlr = 0.05\n[components]\noptimizer = ["momentum", "adam"]\n')
    study = studies.from_toml(path)
    assert {v.get("lr") for v in study.variants.values()} == {0.05}
    assert studies.get_study("components", component=["optimizer=momentum,adam"]).variants["optimizer"]["lr"] == 0.001


def test_effects_of_a_study_without_a_design_is_one_line(fake_study, ablate, tmp_path):
    out = ablate(["plot", fake_study(tmp_path / "s.parquet"), "-o", tmp_path / "e.png", "--kind", "effects"])
    assert out.exit_code == 2 and "is not one" in out.output and not (tmp_path / "e.png").exists()


def test_a_component_study_trains_and_reports_its_effects(ablate, tmp_path):
    out = tmp_path / "c.parquet"
    result = ablate(["components", "--component", "lr=0.01,0.05", "--component", "fc1_features=60,120", *TINY,
                     "--seeds", "2", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert list(dict.fromkeys(frame["variant"])) == ["none", "lr", "fc1_features", "all"]
    assert set(frame["fc1_features"]) == {60, 120} and set(frame["base_lr"]) == {0.01, 0.05}
    compared = compare.compare_studies([out])
    assert set(compared.effects["kind"]) == {"main", "interaction", "total", "shapley", "ladder"}


def test_the_dry_run_shows_the_design_and_its_aliases(ablate, tmp_path):
    out = ablate(["components", "--component", "lr=0.01,0.05", "--component", "momentum=0,0.9", "--component",
                  "fc1_features=60,120", "--component", "conv1_channels=6,12", "--design", "fractional", *TINY,
                  "--dry-run", "--out", tmp_path / "c.parquet"])
    assert out.exit_code == 0, out.output
    assert "the fractional design of 4 components" in out.output and "resolution 4" in out.output
    assert "conv1_channels = lr×momentum×fc1_features" in out.output
    assert "lr×momentum + fc1_features×conv1_channels" in out.output
    assert not (tmp_path / "c.parquet").exists()


@pytest.mark.parametrize("args, said", [
    (["--component", "dropout=0,0"], "give distinct values"),
    (["--component", "dropout=0,0.0"], "give distinct values"),
    (["--component", "dropout=0,0.5,0.7"], "give two values, OFF,ON"),
    (["--component", "dropout=0"], "give two values, OFF,ON"),
    (["--component", "dropout"], "write NAME=OFF,ON"),
    (["--component", "=0,1"], "write NAME=OFF,ON"),
    (["--component", "wings=0,1"], "unknown setting to vary 'wings'"),
    (["--component", "dataset=mnist,synthetic"], "the same for every variant"),
    (["--component", "dropout=0,0.5", "--component", "dropout=0,0.2"], "given twice"),
    (["--component", "dropout=0,0.5", "--design", "half"], "unknown design 'half'"),
    (["--component", "dropout=0,2"], "dropout"),
    ([], "give at least one --component"),
    ([f"--component=c{i}=0,1" for i in range(13)], "at most 12"),
    ([f"--component={n}=0,1" for n in ("conv1_channels", "conv2_channels", "conv3_channels", "fc1_features",
                                        "kernel_size")] + ["--component", "dropout=0,0.5", "--component",
                                                           "batchnorm=false,true", "--component", "lr=0.1,0.01",
                                                           "--component", "weight_decay=0,0.1", "--component",
                                                           "epochs=1,2"], "1,024 variants"),
    (["--component", "momentum=0.5,0.9", "--optimizer", "adam"], "would train the same runs"),
])
def test_bad_components_are_one_line(ablate, tmp_path, args, said):
    out = ablate(["components", *args, "--model", "threeconv", "--dataset", "synthetic", "--dry-run", "--out",
                  tmp_path / "c.parquet"])
    assert out.exit_code == 2, out.output
    assert said in out.output and "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1


@pytest.mark.parametrize("text, said", [
    ('[components]\ndropout = [0, 0.5]\nbatchnorm = [false, true]\n', None),
    ('design = "leave-one-out"\n[components]\ndropout = [0, 0.5]\nbatchnorm = [false, true]\n', None),
    ('design = "full"\n[vary]\ndropout = [0, 0.5]\n', "design is the design of a [components] table"),
    ('design = 3\n[components]\ndropout = [0, 0.5]\n', "design is the design of a [components] table"),
    ('[components]\ndropout = [0, 0.5, 0.7]\n', "give two values"),
    ('[components]\n', "[components] is empty"),
    ('[components]\ndropout = [0, 0.5]\ndesign = "full"\n', "design is read as a setting of [components]"),
])
def test_a_study_files_components_table(ablate, tmp_path, text, said):
    path = tmp_path / "c.toml"
    top, _, tables = text.rpartition("\n[") if text.startswith("design") else ("", "", text.lstrip("["))
    path.write_text(f'{top}\n[base]\nmodel = "threeconv"\n[{tables}')
    study = None
    try:
        study = studies.from_toml(path)
    except Exception as error:  # noqa: BLE001
        assert said is not None and said in str(error), error
        return
    assert said is None
    design = designs.Design.from_metadata(study.design)
    assert design.names == ("dropout", "batchnorm") and study.plot == "effects"
    assert len(study.variants) == (3 if "leave" in text else 4)
