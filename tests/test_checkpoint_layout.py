"""Sweep checkpoint folders: readable, unique by the sweep's uid, short enough for any file system."""

from __future__ import annotations

from prefect_hpo.checkpoint_layout import CheckpointLayout, legacy_folder, sweep_folder

UID = "0123456789abcdef0123456789abcdef"


def test_names_that_cleaned_alike_get_folders_of_their_own() -> None:
    assert legacy_folder("ckpt a") == legacy_folder("ckpt-a") == "ckpt-a"  # what the last release shared
    assert sweep_folder("ckpt a", UID) == f"ckpt-a-{UID}"
    assert sweep_folder("ckpt a", UID) != sweep_folder("ckpt-a", "f" * 32)


def test_a_long_or_foreign_name_makes_a_short_ascii_folder() -> None:
    folder = sweep_folder("é" * 300, UID)
    assert folder == "-" * 60 + f"-{UID}" and len(folder.encode()) < 255


def test_a_new_sweep_has_no_old_folder() -> None:
    layout = CheckpointLayout.of_sweep(
        "/data/ckpt/",
        {"checkpoint_folder": f"a-{UID}", "legacy_checkpoint_folder": None, "legacy_checkpoint_trials": None},
    )
    assert layout.path(0) == f"/data/ckpt/a-{UID}/trial-0" and not layout.is_legacy(0)
