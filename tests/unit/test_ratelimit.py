from omnistock.platform.ratelimit import ConcurrencyLimit, RateLimiter


def test_a_client_gets_its_burst_then_its_rate() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.allow("bot", now=100.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("bot", now=100.4) is False  # 0.8 of a token so far
    assert limiter.allow("bot", now=100.5) is True
    assert limiter.allow("human", now=100.5) is True  # buckets are per client


def test_tokens_never_pile_up_beyond_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=10.0, burst=2)
    assert limiter.allow("c", now=0.0)
    granted = [limiter.allow("c", now=3600.0) for _ in range(3)]
    assert granted == [True, True, False]


def test_requests_beyond_the_cap_are_turned_away_until_one_leaves() -> None:
    cap = ConcurrencyLimit(2)
    assert [cap.try_enter() for _ in range(3)] == [True, True, False]
    cap.leave()
    assert cap.try_enter() is True
    assert cap.try_enter() is False


def test_load_follows_a_rush_but_not_a_moment_of_bunching() -> None:
    cap = ConcurrencyLimit(64, smoothing_s=0.25)
    t = 0.0
    for _ in range(4):
        cap.try_enter(now=t)
    t += 10  # an ordinary load: four under way for a while
    assert 3.9 < cap.load(now=t) <= 4
    for _ in range(16):  # a moment's bunching: twenty under way for a tenth of a second
        cap.try_enter(now=t)
    t += 0.1
    assert (cap.under_way, cap.load(now=t) < 10) == (20, True)
    for _ in range(16):
        cap.leave(now=t)
    for _ in range(28):  # a rush: thirty-two under way for five seconds
        cap.try_enter(now=t)
    t += 5
    assert cap.load(now=t) > 31
    for _ in range(32):  # over: within a second the load is back down
        cap.leave(now=t)
    t += 1
    assert cap.load(now=t) < 1
