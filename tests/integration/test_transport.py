"""The SMTP client against a real server on loopback, with and without PIPELINING: what arrives is
byte for byte what was sent, and every refusal is told apart (4xx or a dropped line: try again;
5xx: never), leaving the connection fit for the next message."""

import pytest

from newsletter.errors import PermanentMailError, TransientMailError
from newsletter.infra.smtp import DataBytes, SmtpConnection, data_bytes, parse_smtp_url
from tests.support.smtp_server import SMTPTestServer
from tests.support.waiting import wait_until

SENDER = "news@news.example.org"
# Lines that start with a dot (SMTP doubles them on the wire), one that is only a dot (which
# would end the message early if it were not doubled), and a bare CR and LF to be made CRLF.
TRICKY = (b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nmiddle . dot\r\n"
          b"bare LF\nbare CR\rlast line without a line end")
TRICKY_ON_ARRIVAL = (b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nmiddle . dot\r\n"
                     b"bare LF\r\nbare CR\r\nlast line without a line end\r\n")


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def relay(request, smtp):
    smtp.plan.pipelining = request.param
    with SmtpConnection(parse_smtp_url(smtp.url), timeout=10) as connection:
        yield connection


def message(n: int) -> bytes:
    return f"Subject: message {n}\r\nMessage-ID: <{n}@test>\r\n\r\nHello {n}.\r\n".encode()


def test_the_relay_offer_is_what_the_client_uses(relay, smtp):
    relay.send(message(1), SENDER, "a@example.com")
    assert relay._pipelining is smtp.plan.pipelining
    got = smtp.to("a@example.com")
    assert [r.sender for r in got] == [SENDER]
    assert got[0].data == message(1)


def test_lines_starting_with_a_dot_and_bare_line_ends_arrive_intact(relay, smtp):
    relay.send(TRICKY, SENDER, "a@example.com")
    relay.send(message(2), SENDER, "b@example.com")  # the session is still in step
    assert smtp.to("a@example.com")[0].data == TRICKY_ON_ARRIVAL
    assert smtp.to("b@example.com")[0].data == message(2)


def test_data_bytes_is_sent_as_it_is(relay, smtp):
    ready = data_bytes(TRICKY)
    assert isinstance(ready, DataBytes) and data_bytes(ready) is ready
    assert ready.endswith(b"\r\n.\r\n") and b"\r\n..leading dot" in ready and b"\r\n...two dots" in ready
    relay.send(ready, SENDER, "a@example.com")
    assert smtp.to("a@example.com")[0].data == TRICKY_ON_ARRIVAL


@pytest.mark.parametrize("stage, reply, error", [
    ("mail", "451 4.3.0 try later", TransientMailError),
    ("mail", "550 5.7.1 sender refused", PermanentMailError),
    ("rcpt", "451 4.2.0 greylisted", TransientMailError),
    ("rcpt", "550 5.1.1 no such user", PermanentMailError),
    ("rcpt", "421 4.7.0 closing", TransientMailError),
    ("data", "452 4.3.1 out of space", TransientMailError),
    ("data", "554 5.6.0 rejected", PermanentMailError),
])
def test_each_refusal_is_classified_and_the_next_message_still_goes(relay, smtp, stage, reply, error):
    if stage == "mail":
        smtp.plan.mail = [reply]
    else:
        getattr(smtp.plan, stage)["refused@example.com"] = [reply]
    with pytest.raises(error) as raised:
        relay.send(message(1), SENDER, "refused@example.com")
    assert reply.split()[0] in str(raised.value)
    if error is PermanentMailError:
        assert raised.value.code == int(reply.split()[0])
    assert smtp.to("refused@example.com") == []
    relay.send(message(2), SENDER, "next@example.com")
    assert [r.data for r in smtp.to("next@example.com")] == [message(2)]


def test_a_line_dropped_after_the_message_is_temporary(relay, smtp):
    smtp.plan.drop_after_data["dropped@example.com"] = 1
    with pytest.raises(TransientMailError):
        relay.send(message(1), SENDER, "dropped@example.com")
    relay.send(message(1), SENDER, "dropped@example.com")  # a new connection, the same message
    assert [r.data for r in smtp.to("dropped@example.com")] == [message(1), message(1)]


@pytest.mark.parametrize("address", ["a@example.com>\r\nRCPT TO:<b@example.com", "a b@example.com",
                                     "<a@example.com>", "a@example.com\n"])
def test_an_address_that_would_change_the_command_is_refused_and_nothing_is_sent(relay, smtp, address):
    with pytest.raises(PermanentMailError, match="not an address"):
        relay.send(message(1), SENDER, address)
    relay.send(message(2), SENDER, "next@example.com")
    assert [r.recipients for r in smtp.received] == [["next@example.com"]]


def test_a_non_ascii_address_needs_smtputf8_which_we_never_ask_for(relay, smtp):
    with pytest.raises(PermanentMailError, match="SMTPUTF8"):
        relay.send(message(1), SENDER, "zoë@example.com")
    relay.send(message(2), SENDER, "next@example.com")
    assert [r.recipients for r in smtp.received] == [["next@example.com"]]


def test_size_is_declared_when_the_relay_offers_it(relay, smtp):
    relay.send(message(1), SENDER, "a@example.com")
    assert relay._size
    assert smtp.handler.mail_options[-1] == [f"SIZE={len(message(1))}"]


# --- `then`: the next envelope goes with this message (one round trip per message) -------------


def test_a_run_of_messages_each_with_the_next_envelope_arrives_once_each(relay, smtp):
    people = [f"p{i}@example.com" for i in range(6)]
    for i, person in enumerate(people):
        following = people[i + 1] if i + 1 < len(people) else None
        relay.send(message(i), SENDER, person, then=following)
        if following and smtp.plan.pipelining:
            assert relay._opened[0] == (SENDER, following)  # already waiting for its message
    assert relay._opened is None
    assert [(r.recipients, r.data) for r in smtp.received] == [([p], message(i)) for i, p in enumerate(people)]


@pytest.mark.parametrize("reply, error", [("550 5.1.1 no such user", PermanentMailError),
                                          ("451 4.2.0 greylisted", TransientMailError)])
def test_a_refusal_of_an_envelope_sent_ahead_is_that_message_s_own(relay, smtp, reply, error):
    smtp.plan.rcpt["b@example.com"] = [reply]
    relay.send(message(1), SENDER, "a@example.com", then="b@example.com")
    with pytest.raises(error, match=reply.split()[0]):
        relay.send(message(2), SENDER, "b@example.com", then="c@example.com")
    relay.send(message(3), SENDER, "c@example.com")
    assert [(r.recipients, r.data) for r in smtp.received] == [(["a@example.com"], message(1)),
                                                               (["c@example.com"], message(3))]


@pytest.mark.parametrize("fault", ["554 5.6.0 rejected", "452 4.3.1 out of space", "drop"])
def test_a_message_refused_or_cut_off_while_the_next_envelope_rides_along(relay, smtp, fault):
    if fault == "drop":
        smtp.plan.drop_after_data["a@example.com"] = 1
    else:
        smtp.plan.data["a@example.com"] = [fault]
    with pytest.raises(PermanentMailError if fault.startswith("5") else TransientMailError):
        relay.send(message(1), SENDER, "a@example.com", then="b@example.com")
    relay.send(message(2), SENDER, "b@example.com")
    assert [r.data for r in smtp.to("b@example.com")] == [message(2)]
    assert len(smtp.to("a@example.com")) == (1 if fault == "drop" else 0)


def test_a_caller_who_sends_to_someone_else_next_never_fills_the_waiting_envelope(relay, smtp):
    relay.send(message(1), SENDER, "a@example.com", then="b@example.com")
    relay.send(message(2), SENDER, "c@example.com")  # b is not next after all
    relay.send(message(3), SENDER, "d@example.com")
    assert [r.recipients for r in smtp.received] == [["a@example.com"], ["c@example.com"], ["d@example.com"]]
    assert smtp.to("b@example.com") == []


def test_a_bad_next_address_is_left_for_its_own_send(relay, smtp):
    relay.send(message(1), SENDER, "a@example.com", then="bad>@example.com")
    assert relay._opened is None
    with pytest.raises(PermanentMailError, match="not an address"):
        relay.send(message(2), SENDER, "bad>@example.com")
    relay.send(message(3), SENDER, "c@example.com")
    assert [r.recipients for r in smtp.received] == [["a@example.com"], ["c@example.com"]]


# --- a relay that hangs up on idle connections ----------------------------------------------------


@pytest.fixture
def impatient_relay():
    """A relay that closes a connection left without a command for half a second."""
    server = SMTPTestServer(idle_timeout=0.5).start()
    yield server
    server.stop()


@pytest.mark.parametrize("then", [None, "b@example.com"], ids=["idle", "idle-with-an-envelope-sent-ahead"])
def test_a_connection_the_relay_closed_while_idle_is_reopened_without_a_deferral(impatient_relay, then):
    with SmtpConnection(parse_smtp_url(impatient_relay.url), timeout=10) as connection:
        connection.send(message(1), SENDER, "a@example.com", then=then)
        wait_until(lambda: impatient_relay.handler.disconnects == 1, 10, "the relay to hang up on the idle line")
        connection.send(message(2), SENDER, "b@example.com")  # no TransientMailError: a new connection
    assert [r.recipients for r in impatient_relay.received] == [["a@example.com"], ["b@example.com"]]
    assert impatient_relay.handler.connections == 2


def test_a_connection_idle_for_long_is_checked_with_noop_and_kept_when_the_relay_answers(relay, smtp):
    relay.send(message(1), SENDER, "a@example.com")
    relay.idle_noop_seconds = 0  # "long" is 30 s in production
    relay.send(message(2), SENDER, "b@example.com")
    assert (smtp.handler.noops, smtp.handler.connections) == (1, 1)
    assert [r.recipients for r in smtp.received] == [["a@example.com"], ["b@example.com"]]
