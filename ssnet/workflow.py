"""Which runs the workflow builds and where their files live (shared by rules/*.smk and the report).

A run is ``(method, labelled, seed)`` of a dataset; its folder is
``results/runs/<dataset>/<method>/<labelled>/seed<seed>/``. Besides the trained runs, every entry of
``datasets.<D>.released_checkpoints`` adds an imported "released" run (see :mod:`ssnet.released`).
"""

from __future__ import annotations

from ssnet.config import labelled_values

RELEASED_METHOD = "released"
RELEASED_SEED = 0


def training_runs(config: dict, dataset: str) -> list[tuple[str, str, int]]:
    """(method, labelled, seed) of every training run of a dataset."""
    block = config["datasets"][dataset]
    return [(method, labelled, seed) for method in block["methods"]
            for labelled in labelled_values(config, dataset, method) for seed in config["seeds"]]


def released_runs(config: dict, dataset: str) -> list[tuple[str, str, int]]:
    """(method, labelled, seed) of the released-checkpoint rows of a dataset."""
    items = config["datasets"][dataset]["released_checkpoints"]
    return [(RELEASED_METHOD, str(item["labelled"]), RELEASED_SEED) for item in items]


def runs_of(config: dict, dataset: str) -> list[tuple[str, str, int]]:
    """Every run whose results enter the tables: trained, then released."""
    return training_runs(config, dataset) + released_runs(config, dataset)


def run_dir(dataset: str, method: str, labelled: str, seed: int) -> str:
    return f"results/runs/{dataset}/{method}/{labelled}/seed{seed}"


def run_path(dataset: str, method: str, labelled: str, seed: int, name: str) -> str:
    return f"{run_dir(dataset, method, labelled, seed)}/{name}"


def released_checkpoint_path(config: dict, dataset: str, labelled: str) -> str:
    """The configured checkpoint file of (dataset, labelled)."""
    for item in config["datasets"][dataset]["released_checkpoints"]:
        if str(item["labelled"]) == str(labelled):
            return item["path"]
    raise ValueError(f"no datasets.{dataset}.released_checkpoints entry with labelled {labelled}")


def reserved_name_problem(config: dict) -> str | None:
    """A message when a configured method uses the name reserved for the released rows."""
    used = RELEASED_METHOD in config["methods"] or any(
        RELEASED_METHOD in block["methods"] for block in config["datasets"].values())
    if used:
        return (f"'{RELEASED_METHOD}' is reserved for the released-checkpoint rows "
                "(datasets.<D>.released_checkpoints): rename that method block")
    return None
