"""The saliency-gated CLIP stage (runtime/clip_stage.py) on real CLIP artifacts and ONNX Runtime.

Machinery on a tiny random CLIP: crops match the training crop, submit never waits for a slow
CLIP backend and the newest crop wins, the rate cap holds, labels and query scores equal a direct
computation, query events fire once per match episode, crops go to the index at the set rate,
and a backend failure stops the stage without touching the caller.

With the demo CLIP (edge_mm/weights/clip-demo.pt, when present): zero-shot colour labels of salient
object crops beat chance, and text -> image retrieval through `edge-mm-index` finds the right
scenes (recall@1/@5 printed; run with -s to see the numbers).
"""

import json
import math
import threading
import time

import numpy as np
import pytest
from retrieval_support import demo_clip_artifact, tiny_clip_artifact, write_scene_images

from edge_mm.synthetic import COLOURS, SHAPES, SceneGenerator
from runtime.backends.base import Backend
from runtime.clip_stage import ClipStage, read_labels
from runtime.retrieval.crop import padded_square_crop
from runtime.retrieval.embed import ClipEmbedder
from runtime.retrieval.store import IndexStore
from runtime.sources.base import Frame

LABELS = ["red", "green", "blue"]
TEMPLATES = ["a photo of a {} object.", "a {} thing."]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip_artifact(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def embedder(clip):
    with ClipEmbedder.open(clip, backend="ort-cpu", threads=1, text="now") as opened:
        yield opened


@pytest.fixture(scope="module")
def scenes():
    generator = SceneGenerator((120, 160), seed=11)
    return [generator.generate(i) for i in range(6)]


def frame_of(scene, index):
    return Frame(
        scene.bgr, scene.depth_m, timestamp_ms=1000.0 + 40.0 * index, capture_time=time.perf_counter(), index=index
    )


def box_of(scene):
    return tuple(scene.objects[0]["box"])


def wait_for(stage, frame_index, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = stage.latest
        if latest is not None and latest.frame_index == frame_index:
            return latest
        stage.raise_if_failed()
        time.sleep(0.005)
    raise AssertionError(f"the CLIP stage did not process frame {frame_index} in {timeout} s")


class SlowBackend(Backend):
    """A real backend with a sleep in front: CLIP on a slow device."""

    name = "slow"

    def __init__(self, inner, delay_s):
        super().__init__(inner.spec, inner.precision)
        self.inner, self.delay_s = inner, delay_s
        self.calls = 0

    def activate_impl(self):
        self.inner.activate()

    def infer_impl(self, feeds):
        time.sleep(self.delay_s)
        self.calls += 1
        return self.inner.infer(feeds)


class FailingBackend(SlowBackend):
    def infer_impl(self, feeds):
        raise RuntimeError("the GPU fell off the bus")


def with_image_backend(embedder, backend):
    return ClipEmbedder(backend.activate(), embedder.text_backend)


def _expected_square_crop(image, box, pad):
    """The crop by its definition: a square of side ceil(longer side x (1 + 2 pad)) centred on the box,
    each output pixel read at its source coordinate clipped into the frame (= border replication)."""
    x0, y0, x1, y1 = box
    side = math.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * pad))
    left, top = math.floor((x0 + x1 - side) / 2), math.floor((y0 + y1 - side) / 2)
    rows = np.clip(np.arange(top, top + side), 0, image.shape[0] - 1)
    cols = np.clip(np.arange(left, left + side), 0, image.shape[1] - 1)
    return image[rows[:, None], cols[None, :]]


def test_crop_is_the_padded_square_by_its_definition():
    # Pixels encode their own coordinates, so a wrong offset or border shows as a wrong value.
    ys, xs = np.mgrid[0:90, 0:120]
    image = np.stack([xs, ys, (xs + ys) % 256], axis=-1).astype(np.uint8)
    for box in [(30, 20, 60, 50), (0, 0, 25, 40), (100, 70, 120, 90), (5, 60, 115, 89), (50, 10, 51, 11)]:
        crop = padded_square_crop(image, box, 0.25)
        np.testing.assert_array_equal(crop, _expected_square_crop(image, box, 0.25))
        assert crop.shape[0] == crop.shape[1]
    # One worked by hand: a 30x30 box padded by 25% each side is 45 wide, starting at (22, 12).
    crop = padded_square_crop(image, (30, 20, 60, 50), 0.25)
    assert crop.shape[:2] == (45, 45) and tuple(crop[0, 0, :2]) == (22, 12) and tuple(crop[-1, -1, :2]) == (66, 56)


def test_labels_and_query_scores_equal_a_direct_computation(embedder, scenes):
    scene = scenes[0]
    stage = ClipStage(embedder, labels=LABELS, templates=TEMPLATES, query="a red circle", max_rate_hz=100)
    with stage:
        assert stage.submit(frame_of(scene, 0), box_of(scene))
        result = wait_for(stage, 0)
    crop = padded_square_crop(scene.bgr, box_of(scene), 0.25)
    image = embedder.embed_images([crop])
    classifier = embedder.classifier(LABELS, TEMPLATES)
    order, probs = classifier.classify(image[0], top_k=3)
    assert result.label == LABELS[order[0]] and result.prob == pytest.approx(float(probs[0]), abs=1e-5)
    assert [name for name, _ in result.top] == [LABELS[i] for i in order]
    assert result.query_score == pytest.approx(float(image[0] @ embedder.embed_texts(["a red circle"])[0]), abs=1e-5)
    assert result.box == box_of(scene)
    assert stage.overlay_lines()[0] == f"clip: {result.label} {100 * result.prob:.0f}%"
    events = stage.drain_events()
    assert [e["type"] for e in events if e["type"] == "clip"] == ["clip"]
    assert events[0]["label"] == result.label and events[0]["index"] == 0 and json.dumps(events)


class BlockedBackend(SlowBackend):
    """A real backend that holds its first call until released: CLIP busy for as long as the test likes."""

    def __init__(self, inner):
        super().__init__(inner, 0.0)
        self.entered, self.release = threading.Event(), threading.Event()

    def infer_impl(self, feeds):
        self.entered.set()
        self.release.wait()
        return super().infer_impl(feeds)


def test_submit_never_waits_for_a_busy_clip(embedder, scenes):
    busy = BlockedBackend(embedder.image_backend)
    stage = ClipStage(with_image_backend(embedder, busy), labels=LABELS, templates=TEMPLATES, max_rate_hz=1e9)
    accepted = []

    def feed():
        for i in range(1, 150):
            scene = scenes[i % len(scenes)]
            if stage.submit(frame_of(scene, i), box_of(scene)):
                accepted.append(i)

    with stage:
        assert stage.submit(frame_of(scenes[0], 0), box_of(scenes[0]))
        assert busy.entered.wait(30)  # CLIP now holds crop 0 and does not return
        feeder = threading.Thread(target=feed)
        feeder.start()
        feeder.join(60)  # a deadlock guard, not a timing: every submit returns while CLIP is held
        finished, calls_while_held = not feeder.is_alive(), busy.calls
        busy.release.set()
        last = wait_for(stage, accepted[-1])  # the newest crop is the one that gets embedded
        stats = stage.stats()
    assert finished and calls_while_held == 0
    assert len(accepted) == 149 and stats["replaced"] == 148  # each crop replaced the one waiting
    assert stats["embedded"] == 2 == busy.calls and last.frame_index == 149


class StepClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_rate_cap(embedder, scenes):
    clock = StepClock()
    stage = ClipStage(embedder, labels=LABELS, templates=TEMPLATES, max_rate_hz=5, clock=clock)
    with stage:
        for i in range(160):  # 0.8 s of a 200 Hz source on the stage's clock, one crop at a time
            clock.now = i * 0.005
            if stage.submit(frame_of(scenes[i % 6], i), box_of(scenes[i % 6])):
                wait_for(stage, i)
        stats = stage.stats()
    # 5 per second: crops at 0.0, 0.2, 0.4 and 0.6 s; every other frame is not due.
    assert stats["embedded"] == stats["accepted"] == 4
    assert stats["not_due"] == 156 and stats["submitted"] == 160


def test_query_events_once_per_match_episode(embedder, scenes):
    image = embedder.embed_images([padded_square_crop(s.bgr, box_of(s), 0.25) for s in scenes])
    scores = image @ embedder.embed_texts(["a red circle"])[0]
    hi, lo = int(np.argmax(scores)), int(np.argmin(scores))
    threshold = float(scores[hi] + scores[lo]) / 2
    stage = ClipStage(embedder, query="a red circle", query_threshold=threshold, max_rate_hz=1000)
    plan = [hi, hi, lo, hi, None, hi]  # match, still matching, below, match again, object lost, match again
    with stage:
        for i, which in enumerate(plan):
            if which is None:
                assert not stage.submit(frame_of(scenes[0], i), None)
                continue
            assert stage.submit(frame_of(scenes[which], i), box_of(scenes[which]))
            wait_for(stage, i)
        events = stage.drain_events()
    matches = [e for e in events if e["type"] == "clip_query"]
    assert [e["index"] for e in matches] == [0, 3, 5]
    assert all(e["query"] == "a red circle" and e["score"] >= round(threshold, 4) for e in matches)
    results = [e for e in events if e["type"] == "clip"]
    assert [e["query_match"] for e in results] == [True, True, False, True, True]


def test_crops_go_to_the_index_at_the_set_rate(tmp_path, embedder, scenes, capsys):
    from runtime.retrieval.cli import main

    index = tmp_path / "memory"
    stage = ClipStage(embedder, index=index, index_interval_s=0, max_rate_hz=1000, source_name="realsense:0042")
    with stage:
        for i in range(3):
            assert stage.submit(frame_of(scenes[i], i), box_of(scenes[i]))
            wait_for(stage, i)
        assert stage.stats()["indexed"] == 3
    with IndexStore(index) as store:
        items = store.items(range(len(store)))
    assert [tuple(int(v) for v in i["box"]) for i in items] == [box_of(s) for s in scenes[:3]]
    assert all(i["path"] == "realsense:0042" and i["source"] == "stream" for i in items)
    assert [i["frame_time"] for i in items] == pytest.approx([1.0, 1.04, 1.08])

    import cv2

    query = tmp_path / "crop.png"
    cv2.imwrite(str(query), padded_square_crop(scenes[1].bgr, box_of(scenes[1]), 0.25))
    assert (
        main(["search", "--index", str(index), "--image", str(query), "-k", "1", "--json"]) == 0
    )  # no --model: the note
    hit = json.loads(capsys.readouterr().out)["results"][0]
    assert hit["box"] == list(box_of(scenes[1])) and hit["score"] > 0.999

    sparse = ClipStage(embedder, index=tmp_path / "sparse", index_interval_s=3600, max_rate_hz=1000)
    with sparse:
        for i in range(3):
            sparse.submit(frame_of(scenes[i], i), box_of(scenes[i]))
            wait_for(sparse, i)
    with IndexStore(tmp_path / "sparse") as store:
        assert len(store) == 1


def test_salient_box_from_a_saliency_model_gates_the_crop(tmp_path, embedder):
    """The full gate: an RGB-D frame -> saliency model (a real ONNX graph: nearest is salient) -> box -> CLIP."""
    from runtime_support import depth_oracle_artifact

    from runtime.backends.onnxrt import OnnxRuntimeBackend
    from runtime.saliency import SaliencyModel

    oracle = depth_oracle_artifact(tmp_path / "oracle")
    scene = SceneGenerator((120, 160), seed=4).generate(0)
    with OnnxRuntimeBackend(oracle / "model.onnx", providers="cpu") as backend:
        model = SaliencyModel(backend)
        saliency = model.postprocess(
            model.infer(model.preprocess(scene.bgr, scene.depth_m)), scene.bgr.shape[:2], scene.depth_m
        )
    assert saliency.box is not None
    with ClipStage(embedder, labels=LABELS, templates=TEMPLATES, max_rate_hz=1000) as stage:
        assert stage.submit(frame_of(scene, 0), saliency)
        assert wait_for(stage, 0).box == saliency.box


def test_a_failing_backend_stops_the_stage_not_the_caller(embedder, scenes):
    stage = ClipStage(
        with_image_backend(embedder, FailingBackend(embedder.image_backend, 0)),
        labels=LABELS,
        templates=TEMPLATES,
        max_rate_hz=1000,
    )
    with stage:
        assert stage.submit(frame_of(scenes[0], 0), box_of(scenes[0]))
        deadline = time.monotonic() + 5
        while stage.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stage.submit(frame_of(scenes[1], 1), box_of(scenes[1]))
        assert stage.overlay_lines() == ["clip: stopped (error)"]
        with pytest.raises(RuntimeError, match="fell off the bus"):
            stage.raise_if_failed()
    assert not any(t.name == "clip-stage" for t in threading.enumerate())


def test_labels_from_a_list_or_a_file(tmp_path):
    assert read_labels("mug, phone ,keys") == ["mug", "phone", "keys"]
    path = tmp_path / "labels.txt"
    path.write_text("# things on my desk\nmug\n\nred phone  # the old one\n")
    assert read_labels(str(path)) == ["mug", "red phone"]
    from edge_mm.errors import UsageError

    with pytest.raises(UsageError, match="repeats"):
        read_labels("mug,mug")
    with pytest.raises(UsageError, match="needs something to do"):
        ClipStage(object())


def test_edge_mm_run_options_build_a_started_stage(tmp_path, clip, scenes):
    import argparse

    from edge_mm.errors import UsageError
    from runtime.clip_stage import add_clip_arguments, clip_stage_from_args

    parser = argparse.ArgumentParser()
    add_clip_arguments(parser)
    assert clip_stage_from_args(parser.parse_args([])) is None
    with pytest.raises(UsageError, match="--query needs a CLIP model"):
        clip_stage_from_args(parser.parse_args(["--query", "a red mug"]))
    args = parser.parse_args(
        [
            "--clip",
            str(clip),
            "--labels",
            "red,green",
            "--label-template",
            "a {} thing",
            "--query",
            "a red mug",
            "--query-threshold",
            "-1",
            "--index",
            str(tmp_path / "memory"),
            "--index-every",
            "0",
            "--clip-rate",
            "50",
            "--clip-backend",
            "ort-cpu",
        ]
    )
    stage = clip_stage_from_args(args, source_name="recording:run.bag")
    try:
        assert stage.submit(frame_of(scenes[0], 0), box_of(scenes[0]))
        result = wait_for(stage, 0)
    finally:
        stage.stop()
    assert result.label in ("red", "green") and result.query_match and result.indexed
    assert [e["type"] for e in stage.drain_events()] == ["clip", "clip_query"]
    assert not stage.embedder.image_backend.is_active  # stop() closed what clip_stage_from_args opened
    with IndexStore(tmp_path / "memory") as store:
        assert store.items([0])[0]["path"] == "recording:run.bag"


# --------------------------------------------------------------------------- with the demo CLIP


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    artifact = demo_clip_artifact(tmp_path_factory.getbasetemp())
    if artifact is None:
        pytest.skip("the demo CLIP weights edge_mm/weights/clip-demo.pt are not there yet")
    return artifact


def test_demo_zero_shot_colours_of_salient_crops_beat_chance(demo):
    """Every object of 40 held-out scenes (seed 3), cut at its box, labelled among the 8 colour names."""
    generator = SceneGenerator((128, 128), seed=3)
    templates = [f"a photo of a {{}} {shape}" for shape in SHAPES]  # prompt ensembling over the shapes
    with ClipEmbedder.open(demo, backend="ort-cpu", text="now") as clip:
        stage = ClipStage(clip, labels=list(COLOURS), templates=templates, max_rate_hz=1000)
        right = total = 0
        with stage:
            for i in range(40):
                scene = generator.generate(i)
                for obj in scene.objects:
                    frame = frame_of(scene, total)
                    assert stage.submit(frame, tuple(obj["box"]))
                    right += wait_for(stage, total).label == obj["colour"]
                    total += 1
    accuracy, chance = right / total, 1 / len(COLOURS)
    print(f"\ndemo CLIP zero-shot colour of {total} salient crops: top-1 {accuracy:.3f} (chance {chance:.3f})")
    assert accuracy > 2 * chance


def test_demo_text_to_image_recall_through_the_cli(tmp_path, demo, capsys):
    """100 held-out scenes indexed with edge-mm-index; each scene's caption must find it (or its twin)."""
    from edge_mm.train.clip_data import canonical_caption
    from runtime.retrieval.cli import main

    count, size = 100, (128, 128)
    generator = SceneGenerator(size, seed=3)
    captions = [canonical_caption(generator.generate(i).objects, size[1]) for i in range(count)]
    paths = write_scene_images(tmp_path / "scenes", count, seed=3, size=size)
    index = tmp_path / "idx"
    assert (
        main(
            [
                "add",
                "--model",
                str(demo),
                "--index",
                str(index),
                str(tmp_path / "scenes"),
                "--json",
                "--backend",
                "ort-cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    queries = tmp_path / "captions.txt"
    queries.write_text("\n".join(captions) + "\n")
    assert main(["search", "--index", str(index), "--queries", str(queries), "-k", "5", "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)["queries"]
    caption_of = {p.name: c for p, c in zip(paths, captions)}
    recall = {1: 0.0, 5: 0.0}
    chance = {1: 0.0, 5: 0.0}
    for caption, answer in zip(captions, answers):
        assert answer["query"]["text"] == caption
        found = [caption_of[r["path"].rsplit("/", 1)[-1]] for r in answer["results"]]
        right = captions.count(caption)  # the scene and its twins (same caption) are all right answers
        for k in (1, 5):
            recall[k] += caption in found[:k]
            chance[k] += 1 - np.prod([(count - right - j) / (count - j) for j in range(k)])
    recall = {k: v / count for k, v in recall.items()}
    chance = {k: v / count for k, v in chance.items()}
    print(
        f"\ndemo CLIP text->image over {count} scenes via edge-mm-index: recall@1 {recall[1]:.3f} "
        f"(chance {chance[1]:.3f}), recall@5 {recall[5]:.3f} (chance {chance[5]:.3f})"
    )
    assert recall[5] > 3 * chance[5] and recall[1] > 3 * chance[1]


def test_demo_query_events_fire_for_the_queried_object(demo):
    """'a red circle' over every object crop of 80 held-out scenes; each crop is its own episode."""
    from runtime.retrieval.crop import padded_square_crop

    generator = SceneGenerator((128, 128), seed=3)
    objects = [(scene, obj) for scene in (generator.generate(i) for i in range(80)) for obj in scene.objects]
    truth = np.array([(o["colour"], o["shape"]) == ("red", "circle") for _, o in objects])
    with ClipEmbedder.open(demo, backend="ort-cpu", text="now") as clip:
        # The threshold halfway between the mean cosine of matching and other crops: the model's own scale.
        scores = (
            clip.embed_images([padded_square_crop(s.bgr, o["box"], 0.25) for s, o in objects])
            @ clip.embed_texts(["a red circle"])[0]
        )
        threshold = float(scores[truth].mean() + scores[~truth].mean()) / 2
        with ClipStage(clip, query="a red circle", query_threshold=threshold, max_rate_hz=1000) as stage:
            for i, (scene, obj) in enumerate(objects):
                assert stage.submit(frame_of(scene, i), tuple(obj["box"]))
                wait_for(stage, i)
                stage.submit(frame_of(scene, i), None)  # the object leaves: the next crop is a new episode
            fired = {e["index"] for e in stage.drain_events() if e["type"] == "clip_query"}
    hits = np.array([i in fired for i in range(len(objects))])
    recall = hits[truth].mean()
    precision = truth[hits].mean() if hits.any() else 0.0
    red = np.mean([objects[i][1]["colour"] == "red" for i in sorted(fired)]) if fired else 0.0
    print(
        f"\ndemo CLIP query 'a red circle' on {len(objects)} crops ({truth.sum()} red circles), threshold {threshold:.3f}: "
        f"recall {recall:.2f}, precision {precision:.2f} (base rate {truth.mean():.3f}), red among fired {red:.2f}"
    )
    assert truth.sum() >= 2 and recall >= 0.8 and precision > 3 * truth.mean()
