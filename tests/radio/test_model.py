"""The channel model with plain numbers: time on air, half-duplex, collisions, hidden nodes,
carrier sense, capture, seeded loss and duty cycle."""

from __future__ import annotations

import random

import pytest

from kai_mesh.harness.radio.airtime import parse_modem
from kai_mesh.harness.radio.model import Channel, ChannelConfig, Delivery, Hearing

MODEM = parse_modem("short-fast")


def make(*nodes: str, hearing: Hearing | None = None, seed: int = 1, **options: object) -> Channel:
    config = ChannelConfig(modem=MODEM, **options)  # type: ignore[arg-type]
    channel = Channel(config, random.Random(seed), hearing)
    for node in nodes:
        channel.attach(node)
    return channel


def run(channel: Channel, until: float) -> list[Delivery]:
    """Drive the timers as the daemon does, to `until`."""
    out: list[Delivery] = []
    while (when := channel.get_timer()) is not None and when <= until:
        out += channel.handle_timer(when)
    return out


def test_a_frame_arrives_after_its_time_on_air_at_every_other_node() -> None:
    ch = make("a", "b", "c")
    frame = b"x" * 100
    toa = ch.airtime(frame)
    assert ch.submit("a", frame, 10.0) == []
    assert ch.get_timer() == pytest.approx(10.0 + toa)
    assert ch.handle_timer(10.0 + toa / 2) == []  # still on the air
    got = run(ch, 20.0)
    assert sorted(d.to for d in got) == ["b", "c"]
    assert all(d.end == pytest.approx(10.0 + toa) and d.payload == frame for d in got)
    stats = ch.stats(20.0)
    assert stats["a"]["frames_sent"] == 1 and stats["a"]["airtime_s"] == pytest.approx(
        toa, abs=1e-4
    )
    assert stats["b"]["received"] == 1


def test_a_node_sends_one_frame_at_a_time() -> None:
    ch = make("a", "b", csma=False)
    toa = ch.airtime(b"1" * 50)
    ch.submit("a", b"1" * 50, 0.0)
    ch.submit("a", b"2" * 50, 0.0)
    got = run(ch, 10.0)
    assert [d.payload[:1] for d in got] == [b"1", b"2"]
    assert got[1].start == pytest.approx(got[0].end)
    assert got[1].end == pytest.approx(2 * toa)
    assert ch.stats(10.0)["b"]["collisions"] == 0


def test_two_nodes_at_once_collide_at_the_third_and_miss_each_other() -> None:
    ch = make("a", "b", "c", csma=False)
    ch.submit("a", b"a" * 40, 0.0)
    ch.submit("b", b"b" * 40, 0.01)
    assert run(ch, 10.0) == []
    stats = ch.stats(10.0)
    assert stats["c"]["collisions"] == 2
    # each transmitter was busy sending while the other's frame was on the air
    assert stats["a"]["lost_half_duplex"] == 1 and stats["b"]["lost_half_duplex"] == 1


def test_frames_that_do_not_overlap_do_not_collide() -> None:
    ch = make("a", "b", "c", csma=False)
    toa = ch.airtime(b"a" * 40)
    got = ch.submit("a", b"a" * 40, 0.0)
    got += ch.submit("b", b"b" * 40, toa)  # starts the instant the first ends
    assert len(got + run(ch, 10.0)) == 4


def test_half_duplex_a_node_transmitting_misses_what_it_would_hear() -> None:
    ch = make("a", "b", csma=False)
    ch.submit("a", b"long" * 50, 0.0)
    ch.submit("b", b"short", 0.05)  # b starts while a's frame is on the air
    assert run(ch, 10.0) == []
    assert ch.stats(10.0)["a"]["lost_half_duplex"] == 1
    assert ch.stats(10.0)["b"]["lost_half_duplex"] == 1


def test_carrier_sense_defers_until_the_channel_clears() -> None:
    ch = make("a", "b", "c", seed=3)
    toa = ch.airtime(b"a" * 40)
    ch.submit("a", b"a" * 40, 0.0)
    ch.submit("b", b"b" * 40, toa / 2)  # hears a's carrier: waits
    got = run(ch, 10.0)
    assert len(got) == 4
    later = [d for d in got if d.sender == "b"]
    assert later[0].start >= toa + 2 * ch.config.slot
    assert ch.stats(10.0)["b"]["deferrals"] == 1


def test_carrier_sense_cannot_hear_a_preamble_that_just_began() -> None:
    ch = make("a", "b", "c")
    ch.submit("a", b"a" * 40, 0.0)
    ch.submit("b", b"b" * 40, ch.config.sense_time / 2)
    assert run(ch, 10.0) == []
    assert ch.stats(10.0)["c"]["collisions"] == 2


def test_hidden_nodes_collide_at_the_node_between_them() -> None:
    # a hears b, b hears c, a and c do not hear each other: carrier sense cannot help
    ch = make("a", "b", "c", hearing=Hearing.hidden([("a", "c")]))
    toa = ch.airtime(b"a" * 40)
    ch.submit("a", b"a" * 40, 0.0)
    ch.submit("c", b"c" * 40, toa / 2)
    assert run(ch, 10.0) == []
    assert ch.stats(10.0)["b"]["collisions"] == 2
    assert ch.stats(10.0)["a"]["lost"] == 0 and ch.stats(10.0)["c"]["lost"] == 0


def test_hidden_node_alone_reaches_only_its_neighbour() -> None:
    ch = make("a", "b", "c", hearing=Hearing.hidden([("a", "c")]))
    assert [d.to for d in (ch.submit("a", b"x", 0.0) + run(ch, 5.0))] == ["b"]


def test_capture_effect_keeps_the_stronger_frame() -> None:
    levels = {("a", "c"): 10.0, ("b", "c"): 0.0}
    ch = make("a", "b", "c", hearing=Hearing(levels=levels), capture_db=6.0, csma=False)
    ch.submit("a", b"a" * 40, 0.0)
    ch.submit("b", b"b" * 40, 0.0)
    got = run(ch, 10.0)
    assert [(d.sender, d.to) for d in got] == [("a", "c")]
    assert ch.stats(10.0)["c"]["collisions"] == 1


def test_seeded_loss_is_repeatable_and_near_its_rate() -> None:
    def losses(seed: int) -> list[int]:
        ch = make("a", "b", loss=0.2, seed=seed, csma=False)
        toa = ch.airtime(b"x")
        got = []
        for k in range(500):
            ch.submit("a", bytes([k % 256]), k * toa * 2)
            got += run(ch, k * toa * 2 + toa)
        return [d.payload[0] for d in got]

    assert losses(7) == losses(7)
    assert losses(7) != losses(8)
    assert 350 < len(losses(7)) < 450


def test_duty_cycle_is_reported_over_the_last_hour() -> None:
    ch = make("a", "b")
    toa = ch.airtime(b"x" * 100)
    for k in range(10):
        ch.submit("a", b"x" * 100, k * 60.0)
        run(ch, k * 60.0 + 1)
    assert ch.duty_used("a", 600.0) == pytest.approx(10 * toa / 3600)
    assert ch.duty_used("a", 600.0 + 3600.0) == 0.0
    assert ch.stats(600.0)["a"]["duty_cycle_hour_pct"] == pytest.approx(1000 * toa / 3600, abs=1e-3)


def test_duty_cycle_enforcement_holds_frames_like_firmware() -> None:
    ch = make("a", "b", duty_limit=0.001)  # 3.6 s an hour
    frame = b"x" * 200
    toa = ch.airtime(frame)
    fits = int(3.6 // toa)
    for _ in range(fits + 1):
        ch.submit("a", frame, 0.0)
    got = run(ch, 600.0)
    assert len(got) == fits
    assert ch.stats(600.0)["a"]["duty_waits"] == 1
    got = run(ch, 3600.0 + 60)
    assert len(got) == 1 and got[0].start >= 3600.0  # the first frame aged out of the window


def test_full_queue_drops_new_frames() -> None:
    ch = make("a", "b", queue_limit=2)
    for _ in range(5):
        ch.submit("a", b"x", 0.0)
    # one on the air, two queued, two dropped
    assert ch.stats(0.0)["a"]["queue_dropped"] == 2
    assert len(run(ch, 10.0)) == 3


def test_detached_nodes_receive_nothing() -> None:
    ch = make("a", "b", "c")
    ch.submit("a", b"x", 0.0)
    ch.detach("c")
    assert [d.to for d in run(ch, 5.0)] == ["b"]
