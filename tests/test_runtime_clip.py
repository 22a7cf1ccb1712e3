"""edge-mm-run with --clip: the saliency stream's salient crops labelled, matched and indexed by CLIP."""

import json

import pytest
from retrieval_support import demo_clip_artifact
from runtime_support import build_artifact

from runtime.cli import main as run_main
from runtime.retrieval.store import IndexStore

COLOURS = "red,green,blue,yellow,orange,purple,white,black"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    base = tmp_path_factory.mktemp("artifacts")
    clip = demo_clip_artifact(base)
    if clip is None:
        pytest.skip("the demo CLIP weights (edge_mm/weights/clip-demo.pt) are not in this checkout")
    # The demo CDINet, at the size it was trained at: its boxes gate the crops.
    return build_artifact(base / "cdinet-s", weights="", size=0), clip


def test_run_labels_matches_and_indexes_salient_objects(tmp_path, artifacts, capsys):
    saliency, clip = artifacts
    events, stats, index = tmp_path / "events.jsonl", tmp_path / "stats.json", tmp_path / "seen"
    code = run_main(
        [
            "--model",
            str(saliency),
            "--camera",
            "synthetic:11",
            "--frames",
            "16",
            "--size",
            "320x240",
            "--headless",
            "--events",
            str(events),
            "--stats",
            str(stats),
            "--quiet",
            "--clip",
            str(clip),
            "--labels",
            COLOURS,
            "--label-template",
            "a {} object",
            "--query",
            "a red object",
            "--query-threshold",
            "0.5",
            "--index",
            str(index),
            "--index-every",
            "0",
            "--clip-rate",
            "1000",
        ]
    )
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    frames = [e for e in lines if "index" in e and e.get("type") is None]
    clip_results = [e for e in lines if e.get("type") == "clip"]
    assert sorted(e["index"] for e in frames) == list(range(16))  # every frame once, CLIP or not
    assert clip_results, "CLIP labelled no salient crop"
    assert all(r["label"] in COLOURS.split(",") and 0.0 <= r["prob"] <= 1.0 for r in clip_results)
    summary = json.loads(stats.read_text())
    assert summary["complete"] and summary["clip"]["embedded"] >= len(clip_results) > 0
    with IndexStore(index) as store:  # the stream's crops are searchable afterwards
        assert len(store) == summary["clip"]["indexed"] > 0


def test_clip_options_need_clip(tmp_path, artifacts, capsys):
    saliency, _ = artifacts
    assert (
        run_main(["--model", str(saliency), "--camera", "synthetic", "--frames", "1", "--headless", "--labels", "mug"])
        == 2
    )
    assert "--labels needs a CLIP model: add --clip CLIP_ARTIFACT" in capsys.readouterr().err
