"""nclab.nets.config: TrainConfig's checks (one wording, that of nclab._validation), the schedules
it implies, and which options a resumption may change.

Oracles: the papers' milestones (1/3 and 2/3 of the epochs), hand-written expected messages.
"""

from __future__ import annotations

import pytest

from nclab.nets.config import RESUME_FREE, TrainConfig, check_resumable, eval_epochs, lr_milestones


def test_schedules():
    assert lr_milestones(200) == [66, 133]
    assert lr_milestones(3) == [1, 2]
    cfg = TrainConfig(epochs=200, eval_schedule="log", eval_points=20)
    ep = eval_epochs(cfg)
    assert ep[0] == 1 and ep[-1] == 200 and len(ep) <= 21 and ep == sorted(set(ep))
    assert eval_epochs(TrainConfig(epochs=5)) == [1, 2, 3, 4, 5]


def test_defaults_are_valid_and_round_trip():
    cfg = TrainConfig().validate()
    assert TrainConfig.from_dict(cfg.to_dict() | {"num_classes": 10}) == cfg  # derived keys ignored


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dataset", "imagenet", "dataset must be one of 'mnist', 'fashion-mnist', 'cifar10', got 'imagenet'"),
        ("model", "vgg", "model must be one of 'resnet18', 'mlp', got 'vgg'"),
        ("head", "cosine", "head must be one of 'learned', 'etf', 'normalized', got 'cosine'"),
        ("eval_schedule", "often", "eval_schedule must be one of 'every', 'log', got 'often'"),
        ("epochs", 0, "epochs must be >= 1, got 0"),
        ("epochs", 2.5, "epochs must be an integer >= 1, got 2.5"),
        ("batch_size", True, "batch_size must be an integer >= 1, got True"),
        ("seed", -1, "seed must be >= 0, got -1"),
        ("feature_dim", 0, "feature_dim must be >= 1, got 0"),
        ("stop_after", "2", "stop_after must be an integer >= 1, got '2'"),
        ("lr", -1, "lr must be > 0, got -1.0"),
        ("tau", 0.0, "tau must be > 0, got 0.0"),
        ("lr", float("nan"), "lr must be a finite number, got nan"),
        ("momentum", -0.1, "momentum must be >= 0, got -0.1"),
        ("weight_decay", "0", "weight_decay must be a real number, got '0'"),
        ("resume", 1, "resume must be True or False, got 1"),
        ("bias", "yes", "bias must be True or False, got 'yes'"),
        ("device", "tpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ],
)
def test_bad_options_are_named_with_value_and_what_is_allowed(field, value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**{field: value}).validate()
    assert str(err.value) == message


def test_optional_fields_accept_none_and_bias_rules():
    TrainConfig(feature_dim=None, per_class=None, stop_after=None, threads=None, bias=None).validate()
    TrainConfig(head="learned", bias=False).validate()
    with pytest.raises(ValueError, match="the normalized head has no bias"):
        TrainConfig(head="normalized", bias=True).validate()


def test_resume_may_change_only_the_free_fields(tmp_path):
    saved = TrainConfig(lr=0.1).to_dict() | {"num_classes": 10}
    free = dict(resume=True, stop_after=5, device="cpu", data_dir="elsewhere", out="o", download=True, threads=1)
    assert set(free) == set(RESUME_FREE)
    check_resumable(TrainConfig(lr=0.1, **free), saved, tmp_path)  # no error
    with pytest.raises(ValueError, match=r"cannot resume .*\(epochs: 200 in the run, 7 now, lr: 0.1 in the run, 0.2 now\)"):
        check_resumable(TrainConfig(lr=0.2, epochs=7), saved, tmp_path)


def test_cifar10_is_an_accepted_dataset_with_ten_classes():
    from nclab.nets.data import input_shape, num_classes

    cfg = TrainConfig(dataset="cifar10", model="resnet18", head="etf", feature_dim=10).validate()
    assert cfg.dataset == "cifar10" and num_classes("cifar10") == 10 and input_shape("cifar10") == (3, 32)
    with pytest.raises(ValueError, match="d >= K-1 = 9"):
        TrainConfig(dataset="cifar10", head="etf", feature_dim=5).validate()
