"""The tracker and the line counter on synthetic tracks with known answers."""

from __future__ import annotations

import numpy as np

from detectors.counting import CounterSettings, Line, LineCounter, MovementEvent
from detectors.detections import DETECTED_CLASSES, Detections
from detectors.mot_metrics import MotAccumulator
from detectors.tracker import ByteTracker, Tracks
from simpang.vehicles import VehicleClass

CAR = DETECTED_CLASSES.index(VehicleClass.CAR)
TRUCK = DETECTED_CLASSES.index(VehicleClass.TRUCK)
MOTORCYCLE = DETECTED_CLASSES.index(VehicleClass.MOTORCYCLE)


def box(cx: float, bottom: float, width: float = 40, height: float = 30) -> list[float]:
    return [cx - width / 2, bottom - height, cx + width / 2, bottom]


def frame(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int64))


def test_two_vehicles_passing_side_by_side_keep_their_ids() -> None:
    tracker = ByteTracker()
    ids: dict[str, set[int]] = {"left": set(), "right": set()}
    for step in range(40):
        left = box(100 + 6 * step, 50 + 4 * step)
        right = box(400 - 6 * step, 70 + 4 * step)
        tracks = tracker.update(frame([left, right], [0.9, 0.85], [CAR, MOTORCYCLE]))
        for xyxy, track_id in zip(tracks.xyxy, tracks.track_id, strict=True):
            ids["left" if xyxy[3] == left[3] else "right"].add(int(track_id))
    # Their boxes overlap most around step 25; they come out with the ids they had.
    assert len(ids["left"]) == 1 and len(ids["right"]) == 1
    assert ids["left"] != ids["right"]


def test_a_short_occlusion_and_weak_detections_keep_the_track() -> None:
    tracker = ByteTracker()
    seen: list[int] = []
    for step in range(50):
        position = box(200, 40 + 5 * step)
        if 15 <= step < 22:
            detections = frame([position], [0.3], [CAR])  # going behind a bus: weakly seen
        elif 22 <= step < 29:
            detections = frame([], [], [])  # hidden for 7 frames
        else:
            detections = frame([position], [0.9], [CAR])
        seen += tracker.update(detections).track_id.tolist()
    assert set(seen) == {1}
    assert len(seen) == 50 - 7  # every frame it was detected in


def test_class_is_the_vote_of_the_whole_track() -> None:
    tracker = ByteTracker()
    classes = []
    for step in range(30):
        flicker = TRUCK if step % 4 == 0 else CAR
        tracks = tracker.update(frame([box(100 + 3 * step, 60 + 3 * step)], [0.8], [flicker]))
        classes += tracks.class_id.tolist()
    assert classes[5:] == [CAR] * len(classes[5:])


def test_a_one_frame_false_positive_never_becomes_a_track() -> None:
    tracker = ByteTracker()
    tracker.update(frame([box(100, 100)], [0.9], [CAR]))
    tracker.update(frame([box(100, 104)], [0.9], [CAR]))
    ghost = tracker.update(frame([box(104, 108), box(500, 300)], [0.9, 0.7], [CAR, CAR]))
    assert ghost.track_id.tolist() == [1]
    after = tracker.update(frame([box(108, 112)], [0.9], [CAR]))
    assert after.track_id.tolist() == [1]


def tracks_at(points: list[tuple[int, float, float]], class_id: int = CAR) -> Tracks:
    """Tracks whose boxes' bottom centres are the given (track id, x, y)."""
    return Tracks(np.array([box(x, y) for _, x, y in points], np.float32).reshape(-1, 4),
                  np.full(len(points), 0.9, np.float32), np.full(len(points), class_id),
                  np.array([t for t, _, _ in points], np.int64))


STOP_LINE = Line("stop", (0.0, 200.0), (640.0, 200.0))


def test_jitter_on_the_line_counts_once_and_naive_counting_does_not() -> None:
    rng = np.random.default_rng(3)
    ys = np.concatenate([np.linspace(150, 198, 15), 200 + rng.normal(0, 3, 30),
                         np.linspace(202, 260, 15)])
    careful = LineCounter([STOP_LINE])
    naive = LineCounter([STOP_LINE], CounterSettings(margin_px=0.0, frames_beyond=1))
    careful_events, naive_events = [], []
    for y in ys:
        careful_events += careful.update(tracks_at([(1, 320, float(y))])).crossings
        naive_events += naive.update(tracks_at([(1, 320, float(y))])).crossings
    assert [(e.direction, e.track_id) for e in careful_events] == [("in", 1)]
    # Without margin and hysteresis the jitter reads as a crossing back out as well.
    assert sorted(e.direction for e in naive_events) == ["in", "out"]


def test_direction_extent_and_class() -> None:
    counter = LineCounter([STOP_LINE])
    events = []
    for step in range(20):
        y_down, y_up = 180 + 3 * step, 240 - 3 * step
        # Track 3 passes beyond the line's end (x 900 > 640): not a crossing of it.
        events += counter.update(tracks_at([(1, 100, y_down), (3, 900, y_down)])).crossings
        events += counter.update(tracks_at([(2, 500, y_up)], class_id=MOTORCYCLE)).crossings
    summary = sorted((e.track_id, e.direction, e.vehicle_class.value) for e in events)
    # Looking along the line (rightwards), its left is up the image: down the image is "in".
    assert summary == [(1, "in", "car"), (2, "out", "motorcycle")]


def test_a_vehicle_changing_lane_as_it_crosses_counts_once_on_the_lane_it_ends_in() -> None:
    lanes = [Line("lane-1", (0.0, 200.0), (320.0, 200.0)),
             Line("lane-2", (320.0, 200.0), (640.0, 200.0))]
    counter = LineCounter(lanes)
    events = []
    for step in range(20):
        # In lane 1 until it is on the line, in lane 2 from just beyond it.
        x, y = 280.0 + 6 * step, 185.0 + 3 * step
        events += counter.update(tracks_at([(1, x, y)], class_id=MOTORCYCLE)).crossings
    assert [(e.line_id, e.direction) for e in events] == [("lane-2", "in")]


def test_a_bottom_hidden_for_a_while_does_not_count_again() -> None:
    # The vehicle crosses, then a nearer one hides its lower part: its box's bottom rises
    # back over the line for 8 frames, then comes down again.
    ys = ([170 + 4 * i for i in range(15)] + [190] * 8 + [230 + 4 * i for i in range(10)])
    both = LineCounter([STOP_LINE])
    inbound = LineCounter([Line("stop", STOP_LINE.start, STOP_LINE.end, directions="in")])
    events_both, events_in = [], []
    for y in ys:
        events_both += both.update(tracks_at([(1, 320, float(y))])).crossings
        events_in += inbound.update(tracks_at([(1, 320, float(y))])).crossings
    assert [e.direction for e in events_both] == ["in", "out"]  # never a second "in"
    assert [e.direction for e in events_in] == ["in"]


def test_an_id_switch_after_the_line_does_not_count_twice() -> None:
    counter = LineCounter([STOP_LINE])
    events = []
    for step in range(30):
        y = 170 + 3 * step
        track_id = 1 if y < 215 else 2  # the tracker loses the vehicle and starts anew
        events += counter.update(tracks_at([(track_id, 320, y)])).crossings
    assert [(e.track_id, e.direction) for e in events] == [(1, "in")]


def test_turning_movements_from_one_line_to_another() -> None:
    entry = Line("north-in", (200.0, 100.0), (440.0, 100.0))
    exit_east = Line("east-out", (500.0, 150.0), (500.0, 350.0))
    counter = LineCounter([entry, exit_east])
    movements: list[MovementEvent] = []
    for step in range(60):
        # Down through the entry line, then right through the east exit line.
        x, y = (320.0, 60 + 4 * step) if step < 30 else (320 + 8 * (step - 29), 180.0)
        movements += counter.update(tracks_at([(5, x, y)])).movements
    assert [(m.from_line, m.to_line, m.track_id) for m in movements] == [
        ("north-in", "east-out", 5)]


def test_mot_metrics_count_misses_false_positives_and_switches() -> None:
    acc = MotAccumulator()
    a, b = np.array([[0.0, 0, 10, 10]]), np.array([[50.0, 50, 60, 60]])
    far = np.array([[200.0, 200, 210, 210]])
    acc.update(np.array([1, 2]), np.vstack([a, b]), np.array([10, 20]), np.vstack([a, b]))
    acc.update(np.array([1, 2]), np.vstack([a, b]), np.array([10]), a)  # 2 missed
    acc.update(np.array([1]), a, np.array([10, 30]), np.vstack([a, far]))  # 30 is false
    acc.update(np.array([1, 2]), np.vstack([a, b]), np.array([20, 10]), np.vstack([a, b]))
    summary = acc.summary()
    assert (summary.ground_truth, summary.predictions, summary.matches) == (7, 7, 6)
    assert (summary.misses, summary.false_positives, summary.id_switches) == (1, 1, 2)
    assert summary.mota == round(1 - (1 + 1 + 2) / 7, 4)
    # Best one-to-one id pairing: 1↔10 (3 frames), 2↔20 (1 frame): IDTP 4 of 7 + 7.
    assert summary.idf1 == round(2 * 4 / 14, 4)
