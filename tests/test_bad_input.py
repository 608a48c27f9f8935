"""Every kind of bad request gets `status: error` with a code and a message; the daemon lives on."""

import msgspec
import pytest

from syncd.protocol import MAX_FRAME_BYTES

CASES = [
    (b"\xff\xfe not json", "bad_request", "JSON"),
    (b"[1, 2, 3]", "bad_request", "object"),
    (b'{"op": "explode"}', "bad_request", "explode"),
    (b'{"start_date": "2025-01-01"}', "bad_request", "op"),
    (b'{"op": "history", "limit": "ten"}', "bad_request", "limit"),
    (b'{"op": "history", "limit": 0}', "bad_request", "limit"),
    (b'{"op": "start", "start_date": 20250101, "end_date": "2025-01-02"}', "bad_request", "start_date"),
    (b'{"op": "start", "start_date": "2025-02-30", "end_date": "2025-03-02"}', "bad_request", "start_date"),
    (b'{"op": "start", "start_date": "2025-13-01", "end_date": "2025-12-31"}', "bad_request", "start_date"),
    (b'{"op": "start", "start_date": "2025-01-01"}', "bad_request", "end_date"),
    (b'{"op": "start", "start_date": "2025-03-02", "end_date": "2025-03-01"}', "invalid_range", "after"),
    (b'{"op": "start", "start_date": "1990-01-01", "end_date": "2025-03-01"}', "invalid_range", "max_days"),
    (b'{"op": "days", "start_date": "2025-03-02", "end_date": "2025-03-01"}', "invalid_range", "after"),
    (b'{"op": "ping", "surprise": 1}', "bad_request", "surprise"),
    (b'{"op": "cancel"}', "not_running", "no sync"),
    (b"{" + b" " * (MAX_FRAME_BYTES + 10) + b"}", "bad_request", "limit"),
]


@pytest.mark.parametrize("frame,code,mentions", CASES, ids=[c[1] + ":" + c[0][:30].decode(errors="replace") for c in CASES])
def test_bad_request_gets_an_error_reply_and_the_daemon_lives(syncd_factory, frame, code, mentions):
    daemon = syncd_factory({"sync": {"max_days": 366}})
    client = daemon.client()
    reply = msgspec.json.decode(client.send_raw(frame))
    assert reply["status"] == "error"
    assert reply["code"] == code
    assert mentions.lower() in reply["message"].lower()
    assert client.ping().pid == daemon.proc.pid


def test_bad_input_during_a_run_does_not_disturb_it(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.05}}})
    client = daemon.client()
    run = client.start("2025-09-01", "2025-09-30")
    for frame, code, _ in CASES:
        if code != "not_running":  # a valid cancel would (rightly) stop the run
            assert msgspec.json.decode(client.send_raw(frame))["status"] == "error"
    status = daemon.wait_idle()
    assert status.last_run.run_id == run.run_id
    assert status.last_run.status == "succeeded"
    assert status.last_run.days_done == 22
