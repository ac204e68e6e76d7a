"""--weights and `ablate finetune`: pretrained weights loaded into any model ablate builds, the
head made new for the data's classes, a probe that changes nothing but its head, a fine-tune
that changes everything, a run from scratch that ignores the weights; and every weights file
or name that does not fit refused in one line. Offline: torchvision's downloads are mocked."""

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from ablate.errors import UsageError
from ablate.models import weights
from ablate.results import files as results
from ablate.results.files import models_path
from ablate.study import planning
from ablate.study.studies import get_study

NETS = '''
from torch import nn


class Net(nn.Module):
    """A conv with batch norm (statistics a probe must not change), then the head."""

    def __init__(self, in_channels=3, num_classes=10, width=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))
'''
STUDY = ["finetune", "--model", "nets:Net", "--dataset", "synthetic", "--limit-train", "200", "--limit-test", "50",
         "--epochs", "2", "--batch-size", "50", "--lr", "0.05", "--device", "cpu", "--save-models"]

SWEPT = [a for a in STUDY[3:] if a not in ("--lr", "0.05")]  # sweeps that vary lr: no --lr


def pretrained(path, width=4, classes=7, seed=1):
    """A Net's weights for `classes` classes, with batch-norm statistics no fresh net has."""
    from nets import Net

    torch.manual_seed(seed)
    net = Net(num_classes=classes, width=width)
    net.body[1].running_mean.uniform_(-1, 1)
    net.body[1].running_var.uniform_(0.5, 2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    return state


@pytest.fixture
def nets(tmp_path, monkeypatch):
    (tmp_path / "nets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def saved(out):
    """Each variant's final weights (seed 0), by variant."""
    frame = pd.read_parquet(out).drop_duplicates("run_id")
    return {r.variant: load_file(models_path(out) / f"{r.run_id}.safetensors") for r in frame.itertuples()}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_probe_changes_only_its_head_finetune_changes_all_scratch_ignores_the_weights(nets, ablate, suffix):
    state = pretrained(nets / f"w{suffix}")
    result = ablate([*STUDY, "--weights", f"w{suffix}", "--out", "a.parquet"])
    assert result.exit_code == 0, result.output
    assert "head fc replaced by a fresh one for the data's classes (fc.weight (7, 16) -> (10, 16))" in result.output
    after = saved(nets / "a.parquet")
    body = [k for k in state if not k.startswith("fc.")]
    assert len(body) == 7  # conv weight and bias, and batch norm's weight, bias and three statistics
    for name in body:  # the probe: not one backbone weight or statistic moved
        assert torch.equal(after["probe"][name], state[name]), name
    moved = [n for n in body if not torch.equal(after["finetune"][n], state[n])]
    assert {"body.0.weight", "body.1.running_mean", "body.1.running_var"} <= set(moved)
    assert not any(torch.equal(after["scratch"][n], state[n]) for n in ("body.0.weight", "body.1.running_mean"))
    assert after["probe"]["fc.weight"].shape == (10, 16)

    frame = pd.read_parquet(nets / "a.parquet").drop_duplicates("variant").set_index("variant")
    assert frame.loc["probe", "trainable_params"] == 16 * 10 + 10
    assert frame.loc["finetune", "trainable_params"] == frame.loc["finetune", "params"] == 3 * 4 * 9 + 4 + 8 + 170
    assert frame.loc["scratch", "trainable_params"] == frame.loc["scratch", "params"]
    assert frame["trainable"].to_dict() == {"scratch": "all", "probe": "head", "finetune": "all"}
    assert pd.isna(frame.loc["scratch", "weights"]) and frame.loc["probe", "weights"] == f"w{suffix}"

    # other weights: the probe and the fine-tune change, the run from scratch does not
    pretrained(nets / f"v{suffix}", seed=2)
    assert ablate([*STUDY, "--weights", f"v{suffix}", "--out", "b.parquet"]).exit_code == 0
    again = saved(nets / "b.parquet")
    assert all(torch.equal(again["scratch"][k], after["scratch"][k]) for k in after["scratch"])
    assert not torch.equal(again["probe"]["body.0.weight"], after["probe"]["body.0.weight"])


def test_weights_on_any_study_load_into_every_variant_and_a_head_probe_keeps_the_rest(nets, ablate):
    state = pretrained(nets / "w.pt")
    result = ablate(["sweep", *SWEPT, "--model", "nets:Net", "--vary", "lr=0.01,0.1", "--weights", "w.pt",
                     "--trainable", "head", "--seeds", "2", "--pack", "--out", "s.parquet"])
    assert result.exit_code == 0, result.output
    assert "every variant: --weights 'w.pt': head fc replaced" in result.output  # said once
    frame = pd.read_parquet(nets / "s.parquet").drop_duplicates("run_id")
    assert len(frame) == 4 and (frame["trainable_params"] == 170).all()
    assert (frame["packed"] == 4).all()  # both rates x 2 seeds packed into one model: batch norm frozen there too
    for run in frame.itertuples():
        kept = load_file(models_path(nets / "s.parquet") / f"{run.run_id}.safetensors")
        assert torch.equal(kept["body.1.running_var"], state["body.1.running_var"])
        assert torch.equal(kept["body.0.weight"], state["body.0.weight"])


def test_resume_from_weights_that_changed_under_the_same_name_is_refused(nets, ablate):
    pretrained(nets / "w.pt")
    study = ["sweep", *SWEPT, "--model", "nets:Net", "--vary", "lr=0.01", "--weights", "w.pt", "--out", "r.parquet"]
    assert ablate([*study, "--seeds", "1"]).exit_code == 0
    assert ablate([*study, "--seeds", "2", "--resume"]).exit_code == 0  # the same file: resumed
    recorded = results.read_metadata(nets / "r.parquet")["weights"]
    assert list(recorded) == ["w.pt"] and recorded["w.pt"].startswith("sha256:")
    before = (nets / "r.parquet").read_bytes()
    pretrained(nets / "w.pt", seed=5)  # other weights, the same name
    one_line(ablate([*study, "--seeds", "3", "--resume"]),
             "--resume: --weights 'w.pt' is not what the file's runs started from (sha256:")
    assert (nets / "r.parquet").read_bytes() == before
    assert ablate([*study, "--seeds", "1", "--force"]).exit_code == 0


def one_line(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_weights_that_do_not_fit_are_one_line_naming_the_first_misfit(nets, ablate):
    pretrained(nets / "wide.pt", width=8)
    one_line(ablate([*STUDY, "--weights", "wide.pt"]),
             "variant 'probe'", "'body.0.weight' has shape (8, 3, 3, 3) there and (4, 3, 3, 3) in the model")
    state = pretrained(nets / "w.pt")
    torch.save({**state, "extra.weight": torch.ones(1)}, nets / "extra.pt")
    one_line(ablate([*STUDY, "--weights", "extra.pt"]), "they hold 'extra.weight', which the model has not")
    torch.save({k: v for k, v in state.items() if k != "body.1.running_mean"}, nets / "short.pt")
    one_line(ablate([*STUDY, "--weights", "short.pt"]), "they have no 'body.1.running_mean'")
    torch.save([1, 2, 3], nets / "list.pt")
    one_line(ablate([*STUDY, "--weights", "list.pt"]), "not a state dict")
    (nets / "junk.safetensors").write_bytes(b"\x00" * 40)
    one_line(ablate([*STUDY, "--weights", "junk.safetensors"]), "cannot read it as weights")
    (nets / "empty.pt").write_bytes(b"")
    one_line(ablate([*STUDY, "--weights", "empty.pt"]), "cannot read it as weights")
    torch.save({"a": "not a tensor"}, nets / "strings.pt")
    one_line(ablate([*STUDY, "--weights", "strings.pt"]), "not a state dict")
    (nets / "dir.pt").mkdir()
    one_line(ablate([*STUDY, "--weights", "dir.pt"]), "not a file")
    one_line(ablate([*STUDY, "--weights", "missing.pt"]), "no such file")
    one_line(ablate([*STUDY, "--weights", "sub/w.bin"]), "a weights file ends in .safetensors, .pt, .pth")
    one_line(ablate([*STUDY, "--weights", " "]), "--weights is empty")
    one_line(ablate([*STUDY, "--weights", "IMAGENET1K_V1"]), "model 'nets:Net' has no torchvision weights")
    one_line(ablate([*STUDY, "--weights", "w.pt", "--trainable", "body"]), "unknown trainable 'body'")
    assert not (nets / "results").exists()


def test_a_torchvision_name_is_checked_and_sets_the_preprocessing_the_weights_expect(ablate):
    one_line(ablate(["finetune", "--model", "resnet18", "--weights", "IMAGENET9", "--dry-run"]),
             "unknown weights for resnet18 'IMAGENET9'", "IMAGENET1K_V1")
    runs = planning.plan(get_study("finetune", model="resnet18", weights="IMAGENET1K_V1"), {}, 1)
    configs = {r.variant: r.config for r in runs}
    assert {c.image_size for c in configs.values()} == {224}  # scratch sees the same data
    assert {c.normalization for c in configs.values()} == {"imagenet"}
    assert configs["scratch"].weights is None and configs["probe"].weights == "IMAGENET1K_V1"
    given = planning.plan(get_study("finetune", model="resnet18"), {"image_size": 64}, 1)
    assert {r.config.image_size for r in given} == {64} and given[1].config.weights == "DEFAULT"
    both = get_study("finetune", models="resnet18,inception_v3")
    with pytest.raises(UsageError, match=r"different sizes \(resnet18 224, inception_v3 299\).*give --image-size"):
        planning.plan(both, {}, 1)
    assert {r.config.image_size for r in planning.plan(both, {"image_size": 96}, 1)} == {96}


def test_torchvision_weights_download_once_and_offline_is_one_line(tmp_path, ablate, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights.forget()
    import torchvision

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    study = ["finetune", "--model", "squeezenet1_1", "--weights", "IMAGENET1K_V1", "--dataset", "synthetic",
             "--image-size", "32", "--limit-train", "100", "--limit-test", "50", "--epochs", "1", "--batch-size",
             "50", "--device", "cpu"]
    one_line(ablate(study), "cannot download SqueezeNet1_1_Weights.IMAGENET1K_V1",
             "put that file into", "or give a weights file")
    assert not list(weights.weights_dir().iterdir())  # no partial download left

    calls = []
    imagenet = torchvision.models.squeezenet1_1(num_classes=1000).state_dict()

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save(imagenet, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    weights.forget()
    result = ablate([*study, "--out", "a.parquet", "--save-models"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0][1] == "b8a52dc0"  # the hash in torchvision's file name is checked
    assert "head classifier.1 replaced" in result.output
    assert "resized and normalised so" not in result.output and "given image size 32" in result.output
    weights.forget()
    assert ablate([*study, "--out", "b.parquet"]).exit_code == 0 and len(calls) == 1  # from the cache
    cached = weights.weights_dir() / "squeezenet1_1-b8a52dc0.pth"
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated since
    weights.forget()
    one_line(ablate([*study, "--out", "c.parquet"]), "squeezenet1_1-b8a52dc0.pth cannot be read",
             "delete it to download it again")
    torch.save([1, 2], cached)  # replaced by something that reads, and is not weights
    weights.forget()
    one_line(ablate([*study, "--out", "c.parquet"]), "squeezenet1_1-b8a52dc0.pth cannot be read",
             "not a state dict", "delete it to download it again")
    frame = pd.read_parquet(tmp_path / "a.parquet").drop_duplicates("variant").set_index("variant")
    probe = load_file(models_path(tmp_path / "a.parquet") / f"{frame.loc['probe', 'run_id']}.safetensors")
    assert torch.equal(probe["features.0.weight"], imagenet["features.0.weight"])
    weights.forget()


FAMILIES = ["resnet18", "resnext50_32x4d", "wide_resnet50_2", "vgg11", "vgg11_bn", "alexnet", "vit_b_16",
            "swin_t", "maxvit_t", "convnext_tiny", "densenet121", "mobilenet_v2", "mobilenet_v3_small",
            "efficientnet_b0", "efficientnet_v2_s", "regnet_y_400mf", "shufflenet_v2_x0_5", "mnasnet0_5",
            "squeezenet1_0", "googlenet", "inception_v3"]
HEADS = {"resnet18": ["fc"], "vgg11": ["classifier.6"], "vit_b_16": ["heads.head"], "swin_t": ["head"],
         "squeezenet1_0": ["classifier.1"], "googlenet": ["aux1.fc2", "aux2.fc2", "fc"],
         "inception_v3": ["AuxLogits.fc", "fc"], "densenet121": ["classifier"]}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_head_of_every_torchvision_family_is_replaced_for_the_datas_classes(name):
    """ImageNet-shaped weights (1000 classes, built on the meta device: nothing is allocated)
    into the net for 7 classes: every other entry fits, and the net gives 7 outputs."""
    from ablate import arch
    from ablate.counting.fake_run import build_meta

    source = arch.model_source(name)
    build = lambda n: source.build(3, n, 64)  # noqa: E731
    imagenet = build_meta(lambda: build(1000)).state_dict()
    model = build_meta(lambda: build(7))
    head = weights.class_dependent(build, 7)
    said = weights.load(model, imagenet, head, "--weights 'x'")
    modules = sorted({k.rpartition(".")[0] for k in head})
    assert said.startswith(f"--weights 'x': head {', '.join(modules)} replaced")
    if name in HEADS:
        assert modules == sorted(HEADS[name])
    side = source.input_shape[1]
    try:
        out = model.eval()(torch.zeros(1, 3, side, side, device="meta"))
    except RuntimeError:  # a net whose forward makes a CPU tensor (regnet): a real one, loaded the same way
        model, imagenet = build(7), {k: torch.zeros_like(v, device="cpu") for k, v in imagenet.items()}
        weights.load(model, imagenet, head, "--weights 'x'")
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, 3, side, side))
        assert all(not v.any() for k, v in model.state_dict().items() if k not in head and v.is_floating_point())
    assert tuple(out.shape) == (1, 7)


def test_several_networks_compare_in_one_study():
    study = get_study("finetune", models="resnet18,resnet34")
    assert list(study.variants) == [f"{m}/{v}" for m in ("resnet18", "resnet34") for v in ("scratch", "probe",
                                                                                             "finetune")]
    assert study.factors[0] == "model"
    runs = {r.variant: r.config for r in planning.plan(study, {}, 1)}
    assert runs["resnet34/probe"].model == "resnet34" and runs["resnet34/probe"].trainable == "head"
    assert runs["resnet34/scratch"].weights is None and runs["resnet18/finetune"].weights == "DEFAULT"
    with pytest.raises(UsageError, match="give --model or --models, not both"):
        get_study("finetune", model="resnet18", models="resnet34")
    for empty in ("", " , "):
        with pytest.raises(UsageError, match="give at least one model"):
            get_study("finetune", models=empty)
    with pytest.raises(UsageError, match="unknown model 'nosuchnet'"):
        planning.plan(get_study("finetune", models="resnet18,nosuchnet"), {}, 1)


NUMBERS = ["variant", "seed", "epoch", "split", "loss", "accuracy", "run_id"]


def test_a_weights_file_replaced_while_the_study_runs_changes_no_number(nets, ablate, monkeypatch):
    """The file is read once, where the study is prepared: every run trains from those tensors,
    whatever happens to the file after (here: replaced once the first run is saved)."""
    file = nets / "w.safetensors"
    args = ["optimizer", "--optimizers", "sgd,adam,momentum", "--model", "nets:Net", "--weights", "w.safetensors",
            "--dataset", "synthetic", "--limit-train", "100", "--limit-test", "50", "--epochs", "1",
            "--batch-size", "50", "--device", "cpu", "--seeds", "1", "--no-pack"]
    pretrained(file)
    assert ablate([*args, "--out", nets / "calm.parquet"]).exit_code == 0
    pretrained(file)
    adds = []
    real_add = results.StudyFile.add

    def add_then_swap(self, *rows, **kwargs):
        real_add(self, *rows, **kwargs)
        adds.append(1)
        if len(adds) == 1:
            pretrained(file, seed=99)  # other weights under the same name

    monkeypatch.setattr(results.StudyFile, "add", add_then_swap)
    result = ablate([*args, "--out", nets / "swapped.parquet"])
    assert result.exit_code == 0, result.output
    assert len(adds) == 3
    calm = results.read_results(nets / "calm.parquet")[NUMBERS].reset_index(drop=True)
    swapped = results.read_results(nets / "swapped.parquet")[NUMBERS].reset_index(drop=True)
    pd.testing.assert_frame_equal(calm, swapped)
    meta = results.read_metadata(nets / "swapped.parquet")["weights"]
    assert meta == results.read_metadata(nets / "calm.parquet")["weights"]


def test_a_weights_file_is_read_once_for_a_study_of_many_variants(nets, ablate, monkeypatch):
    pretrained(nets / "w.pt")
    reads = []
    real_read = weights._read
    monkeypatch.setattr(weights, "_read", lambda *a: reads.append(a) or real_read(*a))
    checks = []
    real_check = weights.check
    monkeypatch.setattr(weights, "check", lambda *a: checks.append(a) or real_check(*a))
    result = ablate(["optimizer", "--model", "nets:Net", "--weights", "w.pt", "--dataset", "synthetic",
                     "--limit-train", "100", "--limit-test", "50", "--epochs", "1", "--batch-size", "50",
                     "--device", "cpu", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert len(reads) == 1 and len(checks) == 1
    assert reads[0][0] == (nets / "w.pt").resolve()  # resolved once, in the driver: workers get the tensors


def test_a_probe_keeps_every_frozen_module_in_eval_mode_dropout_included():
    from torch import nn

    from ablate.training.train import RunConfig, train_mode

    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4),
                        nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 2)))
    net[0].requires_grad_(False)
    net[2].requires_grad_(False)
    train_mode(net, RunConfig(trainable="head"))
    assert [m.training for m in net] == [False, False, False, True]
    assert net[3][0].training  # the head's own dropout trains with it
    train_mode(net, RunConfig(trainable="all"))
    assert all(m.training for m in net.modules())


def test_a_torchvision_name_is_looked_up_and_loaded_once_for_a_study_of_many_variants(tmp_path, ablate, monkeypatch):
    import torchvision

    monkeypatch.chdir(tmp_path)
    imagenet = torchvision.models.squeezenet1_1(num_classes=1000).state_dict()
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, *a, **k: torch.save(imagenet, dst))
    looked_up, loaded = [], []
    real_lookup, real_load = weights.torchvision_weights, torch.load
    monkeypatch.setattr(weights, "torchvision_weights", lambda *a: looked_up.append(a) or real_lookup(*a))
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    result = ablate(["optimizer", "--model", "squeezenet1_1", "--weights", "DEFAULT", "--dataset", "synthetic",
                     "--image-size", "32", "--limit-train", "100", "--limit-test", "50", "--epochs", "1",
                     "--device", "cpu", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert len(looked_up) == 1 and len(loaded) == 1  # six variants: one lookup, one reading


def test_workers_train_from_the_drivers_tensors_not_the_file(nets, ablate, monkeypatch):
    """A process pool's workers (fresh interpreters) get the tensors with their work: the file
    is gone once the study is prepared, and every run still starts from its weights."""
    from pathlib import Path

    from ablate.execution import runner

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    state = pretrained(nets / "w.pt")
    real_prepare = runner.prepare

    def prepare_then_delete(*args, **kwargs):
        prepared = real_prepare(*args, **kwargs)
        (nets / "w.pt").unlink()
        return prepared

    monkeypatch.setattr(runner, "prepare", prepare_then_delete)
    from ablate import plugins, registry

    try:
        result = ablate(["optimizer", "--optimizers", "sgd,adam", "--model", "nets:Net", "--weights", "w.pt",
                         "--trainable", "head", "--plugin", "ablate_example_plugin", "--executor", "process-pool",
                         "--dataset", "synthetic", "--limit-train", "100", "--limit-test", "50", "--epochs", "1",
                         "--batch-size", "50", "--device", "cpu", "--save-models", "--out", "p.parquet"])
    finally:  # the plugin's studies, models and datasets leave with it: other tests list the built-in ones
        import sys

        registry.take_back("ablate_example_plugin")
        plugins.LOADED.pop("ablate_example_plugin", None)
        sys.modules.pop("ablate_example_plugin", None)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(nets / "p.parquet").drop_duplicates("run_id")
    assert (frame["status"] == "ok").all() and len(frame) == 2, frame[["variant", "status", "error"]]
    for run in frame.itertuples():  # the frozen body is the driver's weights
        kept = load_file(models_path(nets / "p.parquet") / f"{run.run_id}.safetensors")
        assert torch.equal(kept["body.0.weight"], state["body.0.weight"])


def test_a_weights_path_that_loops_is_one_line(tmp_path, ablate):
    (tmp_path / "a.pt").symlink_to(tmp_path / "b.pt")
    (tmp_path / "b.pt").symlink_to(tmp_path / "a.pt")
    result = ablate(["linearity", "--dataset", "synthetic", "--epochs", "1", "--weights", tmp_path / "a.pt",
                     "--dry-run", "--out", tmp_path / "l.parquet"])
    assert result.exit_code == 2 and "cannot follow this path" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_head_probe_of_a_layer_stack_trains_only_its_last_layer(tmp_path, ablate, tiny_data):
    """A stack ending in a fixed Linear(10) has no class-dependent entry: its last layer is the head."""
    from ablate.study.planning import resolve
    from ablate.training import train
    from ablate.training.train import RunConfig

    spec = "Conv2d(4, 3), ReLU(), Flatten(), Linear(10)"
    config = resolve(RunConfig(model=spec, trainable="head", dataset="synthetic", epochs=1, batch_size=50,
                               limit_train=300, limit_test=100))
    cpu = torch.device("cpu")
    initial = {k: v.clone() for k, v in train._model(config, tiny_data, 0, cpu).state_dict().items()}
    final = train.train_run(config, tiny_data, 0, cpu, keep_model=True).state
    moved = sorted(k for k in initial if not torch.equal(initial[k], final[k]))
    assert moved == ["3.bias", "3.weight"]
    out = tmp_path / "h.parquet"
    result = ablate(["lr", "--values", "0.1", "--model", spec, "--trainable", "head", "--dataset", "synthetic",
                     "--limit-train", "300", "--limit-test", "100", "--epochs", "1", "--out", out])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out)
    assert set(rows["trainable_params"]) == {4 * 30 * 30 * 10 + 10} and set(rows["params"]) == {4 * 3 * 9 + 4 + 36010}


PROBED = '''
import torch
from torch import nn

SEEN = []  # (module, training) at every forward of the frozen body


class Recorder(nn.Module):
    """A stochastic-depth-like block: no parameters, behaves by `training`."""

    def forward(self, x):
        SEEN.append(("stochastic", self.training))
        return x * (torch.rand(1) > 0.5).float() if self.training else x


class Net(nn.Module):
    def __init__(self, in_channels=3, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2))
        self.norm = nn.BatchNorm2d(4, affine=False)  # beside the body, at the top: no parameter of its own
        self.depth, self.drop = Recorder(), nn.Dropout(0.5)
        self.fc = nn.Linear(16, num_classes)
        for module in (self.norm, self.drop):
            module.register_forward_hook(lambda m, i, o: SEEN.append((type(m).__name__, m.training)))

    def forward(self, x):
        return self.fc(self.drop(self.depth(self.norm(self.body(x))).flatten(1)))
'''


def test_a_probes_frozen_body_is_in_eval_mode_throughout(tmp_path, monkeypatch, tiny_data):
    import sys

    from ablate import arch
    from ablate.study.planning import resolve
    from ablate.training import train
    from ablate.training.train import RunConfig

    (tmp_path / "probed.py").write_text(PROBED)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("probed", None)
    import probed

    config = resolve(RunConfig(model="probed:Net", trainable="head", dataset="synthetic", epochs=1, batch_size=50,
                               limit_train=300, limit_test=100))
    cpu = torch.device("cpu")
    initial = {k: v.clone() for k, v in train._model(config, tiny_data, 0, cpu).state_dict().items()}
    probed.SEEN.clear()
    final = train.train_run(config, tiny_data, 0, cpu, keep_model=True).state
    assert probed.SEEN and not any(training for _, training in probed.SEEN), set(probed.SEEN)
    for entry in ("norm.running_mean", "norm.running_var", "body.0.weight"):
        assert torch.equal(initial[entry], final[entry]), entry
    assert not torch.equal(initial["fc.weight"], final["fc.weight"])
    arch.model_source.cache_clear()
