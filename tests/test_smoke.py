"""A first end-to-end check: a real syncd on a real database syncs a small range."""



def test_start_wait_syncs_every_trading_day(syncd_factory):
    daemon = syncd_factory()
    client = daemon.client()
    reply = client.start("2025-09-29", "2025-10-10")
    assert reply.task.total_days == 12
    status = daemon.wait_idle()
    assert status.last_run.run_id == reply.run_id
    assert status.last_run.status == "succeeded"
    assert status.last_run.trading_days == 4  # 2025-10-01..08 closed for National Day; 10-11 (a Saturday) too
    assert status.last_run.rows == 4 * 200
