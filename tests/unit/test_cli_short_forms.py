"""`ragdock eval SUITE.yaml` and `ragdock train CONFIG.yaml` are the documented short forms."""

from __future__ import annotations

from ragdock_cli import expand_short_forms


def test_yaml_after_eval_or_train_means_run() -> None:
    assert expand_short_forms(["eval", "s.yaml", "--gate", "g.yaml"]) == [
        "eval",
        "run",
        "s.yaml",
        "--gate",
        "g.yaml",
    ]
    assert expand_short_forms(["train", "c.yml", "optim.lr=1e-4"]) == [
        "train",
        "run",
        "c.yml",
        "optim.lr=1e-4",
    ]


def test_sub_commands_and_other_commands_are_left_alone() -> None:
    for argv in (
        ["eval", "gate", "r.json", "g.yaml"],
        ["eval", "run", "s.yaml"],
        ["up"],
        [],
        ["adapters", "x.yaml"],
    ):
        assert expand_short_forms(argv) == argv
