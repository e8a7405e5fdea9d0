"""The example pipeline end to end: prepare data -> sweep as a subflow -> retrain the best on all data -> save."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from prefect.client.orchestration import get_client

from flows.digits_pipeline import digits_pipeline
from prefect_hpo import SqlTrialStore

pytestmark = pytest.mark.prefect


def test_the_pipeline_tunes_retrains_and_saves_the_best_model(tmp_path: Path) -> None:
    summary = digits_pipeline(trials=3, epochs=4, out=str(tmp_path))
    assert json.loads(json.dumps(summary)) == summary  # plain data another flow can take as it is
    swept = summary["sweep"]
    assert len(swept["trials"]) == 3 and swept["best_config"]["epochs"] == 4
    assert json.loads((tmp_path / "config.json").read_text()) == swept["best_config"]
    model = pickle.loads(Path(summary["model"]).read_bytes())
    with np.load(tmp_path / "digits.npz") as d:
        assert model.score(d["x"], d["y"]) == pytest.approx(summary["final_train_acc"])
        assert summary["final_train_acc"] > 0.2  # far above chance (0.1), though 4 epochs of a random config
    # the saved model is the best configuration, retrained
    best = swept["best_config"]
    assert model.hidden_layer_sizes == (best["units"],) * best["layers"] and model.activation == best["act"]
    assert model.learning_rate_init == best["lr"] and model.alpha == best["alpha"]
    # the sweep ran as a subflow of the pipeline's flow run
    store = SqlTrialStore(f"sqlite:///{tmp_path / 'hpo.db'}")
    flow_run_id = store.sweep(store.sweep_id("digits-pipeline"))["flow_run_id"]
    store.close()
    with get_client(sync_client=True) as client:
        sweep_run = client.read_flow_run(UUID(flow_run_id))
    assert sweep_run.parent_task_run_id is not None
