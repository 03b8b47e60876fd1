"""The demo records forms at the time it acts: the example data's dates and times move, their spacing kept."""

from datetime import UTC, datetime

from server.demo import dated


def test_a_forms_times_end_at_the_demos_moment_and_keep_their_spacing():
    example = {
        "collection_started_at": "2026-11-16T08:10:00Z",
        "collection_completed_at": "2026-11-16T12:40:00Z",
        "bag_count": 1,
        "din": "G123498654321",
    }
    moved = dated(example, datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    assert moved == {
        "collection_started_at": "2026-12-01T05:30:00Z",
        "collection_completed_at": "2026-12-01T10:00:00Z",
        "bag_count": 1,
        "din": "G123498654321",
    }


def test_dates_alone_move_by_whole_days_and_other_data_is_left_alone():
    assert dated({"apheresis_date": "2026-11-30", "note": "2026 batch"}, datetime(2026, 12, 10, 9, tzinfo=UTC)) == {
        "apheresis_date": "2026-12-10",
        "note": "2026 batch",
    }
    assert dated({"eligible": True}, datetime(2026, 12, 10, tzinfo=UTC)) == {"eligible": True}
